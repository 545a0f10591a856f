#!/usr/bin/env bash
# System packages some tests use (Chromium for the browser tests).  Installed from Debian
# when missing and when we may (root); otherwise those tests skip and say why.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
    || echo "could not install ${need[*]}; the tests that need them will skip"
else
  echo "missing system packages ${need[*]} (not root): the tests that need them will skip"
fi
exit 0
