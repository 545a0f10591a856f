#!/usr/bin/env bash
# System packages some tests use (Chromium for the browser tests, PostgreSQL + PostGIS for tests/stac).  Installed from Debian
# when missing and when we may (root); otherwise those tests skip and say why.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# PostgreSQL + PostGIS for the local STAC API of tests/stac (pgstac also needs btree_gist and
# unaccent, from postgresql-contrib, which postgresql-15 pulls in)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql-15)
ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 || need+=(postgresql-15-postgis-3)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
    || echo "could not install ${need[*]}; the tests that need them will skip"
else
  echo "missing system packages ${need[*]} (not root): the tests that need them will skip"
fi
exit 0
