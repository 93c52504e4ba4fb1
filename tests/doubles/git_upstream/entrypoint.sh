#!/bin/sh
# Configure from the environment, seed the repositories, run sshd and lighttpd.
#   AUTHORIZED_KEY  public key allowed to log in as git over ssh
#   TOKEN           password of the https users x-access-token and oauth2
#   TLS_NAMES       space-separated DNS names for the server certificate
#   REPOS           bare repositories to create under /srv/git (each seeded with main)
set -eu

install -d -o git -g git -m 700 /srv/git/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /srv/git/.ssh/authorized_keys
chown git:git /srv/git/.ssh/authorized_keys
chmod 600 /srv/git/.ssh/authorized_keys

printf 'x-access-token:%s\noauth2:%s\n' "$TOKEN" "$TOKEN" > /etc/lighttpd/git-users
chmod 644 /etc/lighttpd/git-users

# A test CA and a server certificate signed by it.
cd /etc/lighttpd/tls
san=""
for name in ${TLS_NAMES:-localhost}; do san="${san:+$san,}DNS:$name"; done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=git-upstream test CA" -keyout ca.key -out ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=${TLS_NAMES%% *}" -keyout key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile server.ext -out cert.pem 2>/dev/null
cd /

for repo in ${REPOS:-repo}; do
  bare="/srv/git/$repo.git"
  [ -d "$bare" ] && continue
  su -s /bin/sh git -c "
    set -e
    git init --quiet --bare --initial-branch=main '$bare'
    git -C '$bare' config http.receivepack true
    seed=\$(mktemp -d)
    git init --quiet --initial-branch=main \"\$seed\"
    echo '$repo' > \"\$seed/README\"
    git -C \"\$seed\" add README
    git -C \"\$seed\" -c user.name=upstream -c user.email=upstream@test commit --quiet -m 'initial commit'
    git -C \"\$seed\" push --quiet '$bare' main
    rm -rf \"\$seed\"
  "
  # This remote's own policy: refs named *reject-me* are refused, with a message.
  cat > "$bare/hooks/pre-receive" <<'HOOK'
#!/bin/sh
while read old new ref; do
  case "$ref" in *reject-me*) echo "upstream policy: $ref is not welcome here"; exit 1;; esac
done
HOOK
  chmod 755 "$bare/hooks/pre-receive"
done

/usr/sbin/sshd -e
touch /run/git-upstream.ready
exec lighttpd -D -f /etc/lighttpd/git-upstream.conf
