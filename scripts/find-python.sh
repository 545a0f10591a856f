#!/usr/bin/env bash
# Print the path of a Python 3.12+ interpreter for the project's .venv (the Makefile calls this).
#   1. $PYTHON, when set: used as given, and refused if it is older than 3.12;
#   2. python3.13, python3.12, python3 on PATH;
#   3. pyenv's installed 3.12+ versions ($(pyenv root), $PYENV_ROOT, ~/.pyenv), 3.12 first:
#      the pins in requirements/ are tested on 3.12.
# A candidate counts only if it runs and says it is 3.12 or newer: pyenv's shims exist on
# PATH for every installed version but fail with "command not found" unless that version is
# selected. Nothing found: one line on stderr saying what to install, exit status 1.
set -u

new_enough() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1 </dev/null
}

if [ -n "${PYTHON:-}" ]; then
    if new_enough "$PYTHON"; then
        echo "$PYTHON"
        exit 0
    fi
    echo "PYTHON=$PYTHON is not a working Python 3.12 or newer; point PYTHON at one, or leave it unset to search" >&2
    exit 1
fi

for name in python3.13 python3.12 python3; do
    path=$(command -v "$name" 2>/dev/null) || continue
    if new_enough "$path"; then
        echo "$path"
        exit 0
    fi
done

roots=()
if command -v pyenv >/dev/null 2>&1; then
    roots+=("$(pyenv root 2>/dev/null)")
fi
roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv")
for root in "${roots[@]}"; do
    [ -n "$root" ] && [ -d "$root/versions" ] || continue
    for path in "$root"/versions/3.1[2-9]*/bin/python3; do
        if [ -x "$path" ] && new_enough "$path"; then
            echo "$path"
            exit 0
        fi
    done
done

echo "no Python 3.12 or newer found: install one (e.g. 'pyenv install 3.12', 'uv python install 3.12' or your system's python3.12 package), or run make with PYTHON=/path/to/python3.12" >&2
exit 1
