#!/usr/bin/env bash
# Exit 0 when valgrind's callgrind (valgrind, callgrind_control) is here, installing Debian's
# valgrind package first when it is missing and this is root; exit 3, saying why, when it is
# not here and cannot be installed (`run_bench.py ab --metric instructions` needs it).
set -uo pipefail
have() { command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; }
have && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "ensure_valgrind: valgrind is not installed and this is not root" >&2; exit 3
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure_valgrind: valgrind is not installed and there is no apt-get here" >&2; exit 3
fi
echo "ensure_valgrind: installing valgrind (Debian package)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
         valgrind >/dev/null; }; then
  echo "ensure_valgrind: could not install valgrind" >&2; exit 3
fi
have || { echo "ensure_valgrind: installed, but callgrind_control is missing" >&2; exit 3; }
