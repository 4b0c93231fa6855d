"""The DICOM (DIMSE) listener: Storage SCP, C-ECHO and Study Root C-FIND, with pynetdicom.

Township modalities (CT, DR, ECG carts, slide scanners) that speak classic DICOM rather than
DICOMweb associate with us on ``HUIZHEN_DICOM_PORT`` as one of the AE titles of
``HUIZHEN_DICOM_PEERS``, each mapped to its institution. Any other calling AE title, and any
called AE title but ours, is refused at association (A-ASSOCIATE-RJ, reasons 3 and 7).

pynetdicom runs each association in its own thread and calls the handlers there. The handlers do
the blocking DICOM work in that thread (the received data set is written to a temporary file in
the archive's store, as sent, never decoded) and hand the database work to the server's event
loop with :func:`asyncio.run_coroutine_threadsafe`, so a C-STORE goes through the same door as a
STOW-RS part: :meth:`server.archive.Archive.accept`, in its own transaction, owned by the calling
AE's institution, audited as ``imaging.store`` with ``via: dimse``.

C-STORE statuses (PS3.4 B.2.3, PS3.7 C): ``0000`` stored, or stored already with the same content;
``A700`` out of resources (over ``HUIZHEN_MAX_INSTANCE_BYTES``, disk full, the server too busy to
answer in time); ``C000`` cannot understand (not DICOM, truncated, malformed, required UIDs
missing or inconsistent); ``0111`` duplicate SOP instance (the SOP Instance UID is stored with other
content, or its study belongs to another institution); ``A900`` data set does not match (another
study than expected; not reachable over DIMSE today); ``0110`` processing failure (a fault of
ours). Failures carry the refusal's stable code (``dicom-truncated``…) as the Error Comment.

C-FIND (Study Root, levels STUDY, SERIES and IMAGE) is QIDO-RS with another syntax: the
identifier's non-empty keys become :func:`imaging.qido.parse_query` filters (same matching:
wildcards, ranges, UID lists, person names in any group), the search is restricted to the studies
the calling AE's institution sent, and every requested key is answered, from the index or the
first instance's stored metadata, or empty when we have no value. A key we cannot match on is
answered empty, with the pending status ``FF01`` (optional keys not supported) instead of ``FF00``.
A missing or unknown Query/Retrieve Level, or a malformed value (a date that is not a date), is
``A900``; a fault of ours is ``C000``. Each page of matches is audited (``imaging.search``, one
record per study) in the transaction that read it, before its responses are sent.

pynetdicom logs request and response identifiers (patient names and IDs) at INFO by default;
:func:`dimse` turns that off for the process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import shutil
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imaging.qido import Level, QidoQuery, QueryError, parse_query, search
from server.archive import Archive, TooLarge
from server.audit import Actor, Entry, Outcome, record
from server.db import unit_of_work
from server.keys import ARCHIVE, SESSIONS, SETTINGS
from server.logs import request_id_var
from server.models import DICOM, Institution
from server.settings import SettingsError

__all__ = ["TRANSFER_SYNTAXES", "Listener", "dimse", "resolve_peers"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# -- statuses -------------------------------------------------------------------------------

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NOT_AUTHORISED = 0x0124
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900  # C-STORE: data set; C-FIND: identifier
CANNOT_UNDERSTAND = 0xC000  # C-STORE: cannot understand; C-FIND: unable to process
CANCEL = 0xFE00
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # optional keys not supported for matching

#: Transfer syntaxes accepted for every storage SOP class: the uncompressed ones, deflated, and the
#: compressed ones modalities send (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE).
#: Instances are kept as sent; decoding happens on the way out (WADO), when asked.
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)

#: How long a handler thread waits for the event loop to check and index one instance or one page.
_LOOP_TIMEOUT = 300.0
#: Matches read and sent per page of a C-FIND.
_PAGE = 200

_LEVELS = {"STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE}
#: Unique keys answered at each level whether asked for or not (PS3.4 C.4.1.2.3).
_UNIQUE = {
    Level.STUDY: ("0020000D",),
    Level.SERIES: ("0020000D", "0020000E"),
    Level.INSTANCE: ("0020000D", "0020000E", "00080018"),
}
VERIFICATION = UID("1.2.840.10008.1.1")
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
_QUERY_RETRIEVE_LEVEL = Tag(0x0008, 0x0052)
_SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)


@dataclass(frozen=True, slots=True)
class Peer:
    ae_title: str
    institution_id: uuid.UUID


class IdentifierError(ValueError):
    """The C-FIND identifier cannot be answered; ``message`` names the key, never a value."""


@dataclass(frozen=True, slots=True)
class FindRequest:
    """A C-FIND identifier read into a QIDO query, and what to answer with."""

    level: Level
    level_text: str
    query: QidoQuery
    requested: tuple[DataElement, ...]
    ignored: bool  # some key carried a value we cannot match on


# -- start-up -------------------------------------------------------------------------------


async def resolve_peers(
    factory: async_sessionmaker[AsyncSession], pairs: Iterable[tuple[str, str]]
) -> dict[str, Peer]:
    """AE title → peer, the institution codes of ``HUIZHEN_DICOM_PEERS`` resolved to ids."""
    pairs = list(pairs)
    codes = {code for _, code in pairs}
    async with unit_of_work(factory) as session:
        rows = (
            await session.execute(
                select(Institution.code, Institution.id).where(
                    Institution.code.in_(codes), Institution.active.is_(True)
                )
            )
        ).all()
    ids = {row.code: row.id for row in rows}
    unknown = sorted(codes - ids.keys())
    if unknown:
        raise SettingsError(
            "HUIZHEN_DICOM_PEERS names institution codes that are unknown or inactive: "
            + ", ".join(unknown)
        )
    return {title: Peer(title, ids[code]) for title, code in pairs}


def _application_entity(ae_title: str, peers: Iterable[str]) -> Any:
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = True
    ae.require_calling_aet = sorted(peers)
    # Every storage SOP class (170 of them: ECG waveforms, SR, VL whole slide included). The limit
    # of 128 presentation contexts is on what an association *requests*, not on what we support.
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, list(TRANSFER_SYNTAXES))
    ae.add_supported_context(VERIFICATION, list(_UNCOMPRESSED))
    ae.add_supported_context(STUDY_ROOT_FIND, list(_UNCOMPRESSED))
    return ae


async def dimse(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the DICOM listener on ``HUIZHEN_DICOM_PORT`` (none when it is 0)."""
    settings = app[SETTINGS]
    if settings.dicom_port > 0 and not settings.dicom_peers:
        log.warning(
            "HUIZHEN_DICOM_PORT is set but HUIZHEN_DICOM_PEERS is empty: no modality could "
            "associate, so the DICOM listener stays off"
        )
    if settings.dicom_port <= 0 or not settings.dicom_peers:
        yield
        return
    peers = await resolve_peers(app[SESSIONS], settings.dicom_peers)
    # pynetdicom logs identifiers (patient names, IDs) and whole DIMSE messages by default.
    # Received data sets go to a file as they arrive (pynetdicom writes Part 10 with file meta),
    # so a large instance (a whole slide) never sits in memory whole.
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    listener = Listener(
        app[ARCHIVE], app[SESSIONS], peers, asyncio.get_running_loop(), settings.max_instance_bytes
    )
    ae = _application_entity(settings.dicom_ae_title, peers)
    address = (settings.host, settings.dicom_port)
    await asyncio.to_thread(ae.start_server, address, block=False, evt_handlers=listener.handlers())
    log.info(
        "DICOM listener on %s:%d as %s, %d peers",
        settings.host,
        settings.dicom_port,
        settings.dicom_ae_title,
        len(peers),
    )
    try:
        yield
    finally:
        # Aborts open associations and stops the server; in a thread, because a handler may be
        # waiting for this loop to finish its work.
        await asyncio.to_thread(ae.shutdown)
        log.info("DICOM listener stopped")


# -- the handlers ---------------------------------------------------------------------------


class Listener:
    """The event handlers of the listener, bound to one application.

    Handlers run in pynetdicom's association threads; database work is sent to ``loop``.
    """

    def __init__(
        self,
        archive: Archive,
        sessions: async_sessionmaker[AsyncSession],
        peers: Mapping[str, Peer],
        loop: asyncio.AbstractEventLoop,
        max_instance_bytes: int,
    ) -> None:
        self.archive = archive
        self.sessions = sessions
        self.peers = dict(peers)
        self.loop = loop
        self.max_instance_bytes = max_instance_bytes
        # Studies audited as stored, per association: one record per study and association.
        self._audited: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
        ]

    # -- common -------------------------------------------------------------------------

    def _peer(self, event: Any) -> Peer | None:
        return self.peers.get(str(event.assoc.requestor.ae_title).strip())

    def _actor(self, event: Any, peer: Peer) -> Actor:
        return Actor(
            user_id=None,
            username=peer.ae_title,
            institution_id=peer.institution_id,
            client_address=str(event.assoc.requestor.address)[:64],
            request_id="dimse-" + secrets.token_hex(6),
        )

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop from a handler thread, and wait for it."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(_LOOP_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise

    # -- C-ECHO -------------------------------------------------------------------------

    def on_echo(self, event: Any) -> int:
        return SUCCESS

    # -- C-STORE ------------------------------------------------------------------------

    def on_store(self, event: Any) -> Dataset | int:
        peer = self._peer(event)
        if peer is None:  # refused at association already; never trust that alone
            return NOT_AUTHORISED
        actor = self._actor(event, peer)
        tmp = self.archive.store.temp_path()
        try:
            received: Path = event.dataset_path
            if received.stat().st_size > self.max_instance_bytes:
                log.warning("C-STORE from %s refused: over the size limit", peer.ae_title)
                return _status(OUT_OF_RESOURCES, "too-large")
            _copy_synced(received, tmp)
            status, code = self._on_loop(self._accept(tmp, peer, actor, event.assoc))
        except OSError:
            log.exception("C-STORE from %s: the instance could not be written", peer.ae_title)
            return _status(OUT_OF_RESOURCES, "disk")
        except TimeoutError:
            log.error("C-STORE from %s: no answer from the server in time", peer.ae_title)
            return _status(OUT_OF_RESOURCES, "busy")
        except Exception:
            log.exception("C-STORE from %s failed", peer.ae_title)
            return _status(PROCESSING_FAILURE, "internal")
        finally:
            tmp.unlink(missing_ok=True)  # adopted or discarded by now, except after a fault
        return _status(status, code)

    async def _accept(self, tmp: Path, peer: Peer, actor: Actor, assoc: Any) -> tuple[int, str]:
        token = request_id_var.set(actor.request_id)
        try:
            try:
                received = await self.archive.receive_file(tmp)
            except TooLarge:
                return OUT_OF_RESOURCES, "too-large"
            async with self.sessions() as session:
                accepted = await self.archive.accept(
                    session, received, owner_id=peer.institution_id
                )
                inst = accepted.instance
                if accepted.ok and inst is not None:
                    if self._first_store(assoc, inst.study_uid):
                        entry = Entry(
                            action="imaging.store",
                            object_type="study",
                            object_id=inst.study_uid,
                            detail={"via": "dimse"},
                        )
                        await record(session, actor, [entry])
                    await session.commit()
                    log.debug("C-STORE from %s: %s", peer.ae_title, accepted.verdict.value)
                    return SUCCESS, ""
                await session.rollback()
                failed = Entry(
                    action="imaging.store",
                    object_type="study",
                    object_id=inst.study_uid if inst is not None else "",
                    outcome=Outcome.FAILED,
                    detail={"via": "dimse", "reason": accepted.code},
                )
                await record(session, actor, [failed])
                await session.commit()
            log.info("C-STORE from %s refused: %s", peer.ae_title, accepted.code)
            return accepted.reason or CANNOT_UNDERSTAND, accepted.code
        finally:
            request_id_var.reset(token)

    def _first_store(self, assoc: Any, study_uid: str) -> bool:
        with self._lock:
            seen = self._audited.setdefault(assoc, set())
            if study_uid in seen:
                return False
            seen.add(study_uid)
            return True

    # -- C-FIND -------------------------------------------------------------------------

    def on_find(self, event: Any) -> Iterator[tuple[Dataset | int, Dataset | None]]:
        peer = self._peer(event)
        if peer is None:
            yield NOT_AUTHORISED, None
            return
        try:
            request = read_identifier(event.identifier)
        except IdentifierError as exc:
            yield _status(DOES_NOT_MATCH, str(exc)), None
            return
        except Exception:  # an identifier pydicom cannot decode
            log.warning("C-FIND from %s: the identifier cannot be decoded", peer.ae_title)
            yield _status(DOES_NOT_MATCH, "the identifier cannot be decoded"), None
            return
        actor = self._actor(event, peer)
        pending = PENDING_WARNING if request.ignored else PENDING
        offset = 0
        while True:
            try:
                query = dataclasses.replace(request.query, limit=_PAGE, offset=offset)
                items = self._on_loop(self._find_page(query, peer, actor, request.level))
            except Exception:
                log.exception("C-FIND from %s failed", peer.ae_title)
                yield _status(CANNOT_UNDERSTAND, "internal"), None
                return
            for item in items:
                if event.is_cancelled:
                    yield CANCEL, None
                    return
                yield pending, answer(request, item)
            if len(items) < _PAGE:
                break
            offset += _PAGE
        yield SUCCESS, None

    async def _find_page(
        self, query: QidoQuery, peer: Peer, actor: Actor, level: Level
    ) -> list[dict[str, Any]]:
        token = request_id_var.set(actor.request_id)
        try:
            async with unit_of_work(self.sessions) as session:
                items = await search(
                    session,
                    DICOM,
                    query,
                    visible=DICOM.studies.c.owner_id == peer.institution_id,
                    base_url="",
                )
                studies = sorted({_first_value(item, "0020000D") for item in items})
                await record(
                    session,
                    actor,
                    (
                        Entry(
                            action="imaging.search",
                            object_type="study",
                            object_id=uid,
                            detail={"via": "dimse", "level": level.value},
                        )
                        for uid in studies
                    ),
                )
            return items
        finally:
            request_id_var.reset(token)


def _copy_synced(source: Path, target: Path) -> None:
    """Copy the received file into the archive's own file system (pynetdicom removes its copy
    after the handler returns), in bounded memory, and sync it."""
    with source.open("rb") as src, target.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


def _status(status: int, comment: str = "") -> Dataset | int:
    if not comment or status in (SUCCESS, PENDING, PENDING_WARNING):
        return status
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def _first_value(item: Mapping[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


# -- identifiers ----------------------------------------------------------------------------


def _matching_value(elem: DataElement) -> str:
    """The element's value as QIDO text: UID lists joined by commas, others their first value."""
    if elem.VR == "SQ" or elem.value is None or elem.value == "":
        return ""
    if isinstance(elem.value, MultiValue | list | tuple):
        values = [str(v) for v in elem.value]
        return ",".join(values) if elem.VR == "UI" else (values[0] if values else "")
    if isinstance(elem.value, bytes):
        return ""
    return str(elem.value).strip()


def read_identifier(identifier: Dataset) -> FindRequest:
    """Read a Study Root C-FIND identifier into a QIDO query at its level."""
    if _QUERY_RETRIEVE_LEVEL not in identifier:
        raise IdentifierError("QueryRetrieveLevel is missing")
    level_text = str(identifier[_QUERY_RETRIEVE_LEVEL].value or "").strip().upper()
    level = _LEVELS.get(level_text)
    if level is None:
        raise IdentifierError("QueryRetrieveLevel must be STUDY, SERIES or IMAGE")
    pairs: list[tuple[str, str]] = []
    requested: list[DataElement] = []
    ignored = False
    for elem in identifier:
        if elem.tag in (_QUERY_RETRIEVE_LEVEL, _SPECIFIC_CHARACTER_SET):
            continue
        if elem.tag.is_private or elem.tag.group in (0x0000, 0x0002):
            continue  # private keys are not answered; command and meta groups are not keys
        requested.append(elem)
        tag = f"{elem.tag:08X}"
        pairs.append(("includefield", tag))
        value = _matching_value(elem)
        if not value:
            continue  # universal matching: a return key only
        try:
            parse_query(level, [(tag, "")])
        except QueryError:
            ignored = True  # not a key we match on: answered, not matched
            continue
        try:
            parse_query(level, [(tag, value)])
        except QueryError as exc:
            raise IdentifierError(exc.message) from None
        pairs.append((tag, value))
    query = parse_query(level, pairs)
    return FindRequest(level, level_text, query, tuple(requested), ignored)


def answer(request: FindRequest, item: Mapping[str, Any]) -> Dataset:
    """One C-FIND response identifier: every requested key, filled from a QIDO result."""
    wanted = {f"{elem.tag:08X}" for elem in request.requested}
    wanted.update(_UNIQUE[request.level])
    found = Dataset.from_json(
        {
            tag: value
            for tag, value in item.items()
            if tag in wanted and "BulkDataURI" not in value and tag != "00081190"
        }
    )
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = request.level_text
    for elem in request.requested:
        if elem.tag in found:
            ds[elem.tag] = found[elem.tag]
        else:
            ds[elem.tag] = DataElement(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
    for tag in _UNIQUE[request.level]:
        key = Tag(int(tag, 16))
        if key not in ds and key in found:
            ds[key] = found[key]
    return ds
