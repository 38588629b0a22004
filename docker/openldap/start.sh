#!/bin/sh
# First start: a CA and a certificate for the name `openldap`, the configuration from the tests'
# template, the sample directory loaded with ldapadd (so that memberof writes memberOf). Then
# slapd in the foreground.
set -eu
data=/var/lib/openldap-demo
ca=/ca
pw=$(cat /run/secrets/ldap_admin_password)
mkdir -p "$data/db" "$ca"
if [ ! -f "$ca/server.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$data/ca.key" -out "$ca/ca.pem" -days 825 \
        -subj "/CN=dirbridge compose demo CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout "$data/server.key" -out "$data/server.csr" \
        -subj "/CN=openldap" 2>/dev/null
    printf 'subjectAltName=DNS:openldap,DNS:localhost\n' > "$data/san.ext"
    openssl x509 -req -in "$data/server.csr" -CA "$ca/ca.pem" -CAkey "$data/ca.key" -CAcreateserial \
        -out "$ca/server.pem" -days 825 -extfile "$data/san.ext" 2>/dev/null
fi
sed -e "s#@DIR@#$data#g" -e "s#@CA@#$ca/ca.pem#g" -e "s#@CERT@#$ca/server.pem#g" \
    -e "s#@KEY@#$data/server.key#g" -e "s#@ROOTPW@#$pw#g" \
    /opt/openldap/slapd.conf.template > "$data/slapd.conf"
if [ ! -f "$data/loaded" ]; then
    /usr/sbin/slapd -f "$data/slapd.conf" -h "ldap://127.0.0.1:389/"
    i=0
    until ldapsearch -x -H ldap://127.0.0.1:389 -b "" -s base >/dev/null 2>&1; do
        i=$((i + 1)); [ "$i" -lt 100 ] || exit 1; sleep 0.1
    done
    ldapadd -x -H ldap://127.0.0.1:389 -D "cn=admin,dc=example,dc=org" -w "$pw" \
        -f /opt/openldap/sample.ldif >/dev/null
    kill "$(cat "$data/slapd.pid")"
    while [ -f "$data/slapd.pid" ]; do sleep 0.1; done
    touch "$data/loaded"
fi
exec /usr/sbin/slapd -f "$data/slapd.conf" -h "ldap:/// ldaps:///" -d 0
