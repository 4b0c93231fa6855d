// Drives web/src/call/quality.ts (bundled by the test) through scenarios, on a clock and an
// RTCPeerConnection the script controls, and prints what the monitor did as JSON lines.
// Usage: node quality_monitor.mjs <bundled quality.mjs>
const { QualityMonitor, SAMPLE_MS } = await import(process.argv[2])

let now = 1_000_000
Date.now = () => now

/** A connection whose ICE state and statistics the scenario sets. */
class Connection {
  iceConnectionState = 'connected'
  received = 0
  lost = 0
  bitrate = 2_000_000
  async getStats() {
    return new Map([
      ['in', { type: 'inbound-rtp', packetsReceived: this.received, packetsLost: this.lost }],
      ['t', { type: 'transport', selectedCandidatePairId: 'p' }],
      ['p', { type: 'candidate-pair', availableOutgoingBitrate: this.bitrate }],
    ])
  }
}

/** One scenario: `steps` are [ICE state, packets received, packets lost, bitrate] per sample. */
async function run(name, steps, { chose = null } = {}) {
  const pc = new Connection()
  let mode = 'full'
  const downs = []
  const monitor = new QualityMonitor(pc, () => mode, (m) => { mode = m; downs.push([sample, m]) })
  let sample = 0
  for (const [state, received, lost, bitrate] of steps) {
    now += SAMPLE_MS
    if (chose !== null && sample === chose) monitor.userChose()
    pc.iceConnectionState = state
    pc.received += received
    pc.lost += lost
    pc.bitrate = bitrate
    await monitor.sample()
    sample += 1
  }
  console.log(JSON.stringify({ name, downs }))
}

const good = ['connected', 500, 0, 2_000_000]
const lossy = ['connected', 450, 50, 2_000_000] // 10 %: low
const starved = ['connected', 500, 0, 50_000] // under 80 kbit/s: audio
const down = ['disconnected', 0, 0, 2_000_000]
const times = (step, n) => Array.from({ length: n }, () => step)

await run('lossy after warm-up', [...times(good, 5), ...times(lossy, 3)])
await run('starved after warm-up', [...times(good, 5), ...times(starved, 3)])
await run('lossy during warm-up', times(lossy, 4))
await run('two poor samples are not a run', [...times(good, 5), lossy, lossy, good, lossy, lossy])
// ICE is down for three samples, then back: its first samples show the outage's loss and a
// bandwidth estimate that starts again.
await run('back from an outage', [...times(good, 5), ...times(down, 3), ...times(starved, 4), ...times(lossy, 4)])
await run('the user chose', [...times(good, 5), ...times(lossy, 10)], { chose: 6 })
