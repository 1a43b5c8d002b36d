#!/usr/bin/env bash
# Regenerates the golden files in this directory with real Nix 2.8 (Debian nix-bin 2.8.0).
# The tests never run this script; they only read its output. See README.md.
#
# Usage: bash make-golden.sh          (as root or with a writable temp dir; needs `nix`)
#
# Every Nix call is hermetic (private HOME/XDG dirs, no substituters) and writes only to a
# chroot store in a temp dir, never to /nix/store.
set -euo pipefail
cd "$(dirname "$0")"
OUT=$(pwd -P)
W=$(mktemp -d)
trap 'chmod -R u+w "$W" 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir -p "$W/home" "$W/xdg-cache" "$W/xdg-config" "$W/xdg-data"
export HOME="$W/home" XDG_CACHE_HOME="$W/xdg-cache" XDG_CONFIG_HOME="$W/xdg-config" XDG_DATA_HOME="$W/xdg-data"
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsandbox = false\nsubstituters ='
STORE="$W/store"
nix --version

# 1. The test tree (interop.rs `golden_tree` builds the same tree in Rust).
#    Top-level names sort tricky as raw bytes: 1 A B _ a "a b" b.
T="$W/tree"
mkdir -p "$T/A/sub" "$T/b"
printf 'one\n'                    > "$T/1"
printf 'x'                        > "$T/A/sub/x"
printf '\000\001\377 not utf-8\n' > "$T/A/bytes"
ln -s /nowhere/dangling             "$T/A/abs-link"
ln -s a                           "$T/B"
: >                                 "$T/_"
printf 'alpha\n'                  > "$T/a"
printf '#!/bin/sh\necho "a b"\n'  > "$T/a b"
chmod 644 "$T/1" "$T/A/sub/x" "$T/A/bytes" "$T/_" "$T/a"
chmod 755 "$T/a b"

# 2. Its NAR and hashes, as Nix computes them.
nix-store --dump "$T" > "$OUT/tree.nar"
{
  echo "nar-hash-sri: $(nix hash path "$T")"
  echo "nar-hash-nix32: $(nix hash path --base32 "$T")"
  echo "nar-hash-hex: $(nix hash path --base16 "$T")"
  echo "nar-size: $(stat -c %s "$OUT/tree.nar")"
  echo "store-path: $(nix-store --store "$STORE" --add "$T")"
} > "$OUT/tree.facts"

# 3. A signing key made by Nix (for tests only; it signs nothing else).
nix key generate-secret --key-name checkdef-golden-1 > "$OUT/golden-key.sec"
nix key convert-secret-to-public < "$OUT/golden-key.sec" > "$OUT/golden-key.pub"

# 4. Two text paths, one referring to the other (builtins.toFile), so a signed fingerprint has
#    a reference.
WITHREF=$(nix eval --store "$STORE" --raw --expr \
  'let g = builtins.toFile "greeting" "hello binary cache\n"; in builtins.toFile "withref" "see ${g}\n"')
echo "withref-path: $WITHREF" >> "$OUT/tree.facts"
TREE=$(sed -n 's/^store-path: //p' "$OUT/tree.facts")

# 5. Sign them in the chroot store, then let Nix write file:// caches.
nix store sign --store "$STORE" --key-file "$OUT/golden-key.sec" -r "$TREE" "$WITHREF"
rm -rf "$OUT/cache-xz" "$OUT/cache-zstd" "$OUT/cache-bzip2"
nix copy --store "$STORE" --to "file://$OUT/cache-xz" "$TREE" "$WITHREF"
nix copy --store "$STORE" --to "file://$OUT/cache-zstd?compression=zstd" "$TREE"
nix copy --store "$STORE" --to "file://$OUT/cache-bzip2?compression=bzip2" "$TREE"
find "$OUT" -type f ! -name "*.md" ! -name "*.sh" | sort | xargs ls -l
