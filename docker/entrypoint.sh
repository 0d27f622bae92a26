#!/bin/sh
# The image's entrypoint: one image, and the container's command says what it does.
#
#   run (the default)  kloyst run $KLOYST_INI      the mode named by SERVICE_TYPE
#   migrate            kloyst db upgrade $KLOYST_INI  every migration of the core and the plugins
#                      (it runs no service, so SERVICE_TYPE need not be set)
#   anything else      run as given, e.g. `kloyst outbox status /app/staging.ini`
#
# Every branch execs, so kloyst replaces this shell: `docker stop` sends SIGTERM to Kloyst itself, which
# stops cleanly (the HTTP server stops accepting, the consumer finishes the tasks in hand).
# KLOYST_INI defaults to the ini baked into the image; the host tests point it at a copy.
set -eu

ini="${KLOYST_INI:-/app/staging.ini}"
command="${1:-run}"
if [ "$#" -gt 0 ]; then shift; fi

case "$command" in
  run) exec kloyst run "$ini" "$@" ;;
  migrate) exec kloyst db upgrade "$ini" "$@" ;;
  *) exec "$command" "$@" ;;
esac
