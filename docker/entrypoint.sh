#!/bin/sh
# Entrypoint of the Huizhen image.
#
#   serve (the default)    apply database migrations, seed the demo consortium when
#                          HUIZHEN_SEED_DEMO=1 (only into an empty database), then serve.
#   migrate, seed-demo,    run that huizhen command and exit, for example:
#   create-user, --help      docker compose run --rm app create-user --username ... --password-stdin
#   anything else          run it as given (for example: sh).
#
# The server replaces this shell (exec), so it receives SIGTERM from `docker stop` directly.
set -eu

if [ "$#" -eq 0 ]; then
    set -- serve
fi

case "$1" in
    serve)
        huizhen migrate
        if [ "${HUIZHEN_SEED_DEMO:-0}" = "1" ]; then
            huizhen seed-demo --if-empty
        fi
        exec huizhen "$@"
        ;;
    migrate | seed-demo | create-user | -h | --help)
        exec huizhen "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
