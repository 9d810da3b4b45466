#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/, with AddressSanitizer) and runs each for FUZZ_SECONDS (default 30) from the
# committed seed corpus in Fuzz/corpus/NAME. New interesting inputs go to a scratch folder, not the repository; a
# crash leaves its input in Fuzz/artifacts/ and fails the run (turn it into a unit test, then fix it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
swift build --package-path Fuzz --sanitize fuzzer --sanitize address
bin=$(swift build --package-path Fuzz --sanitize fuzzer --sanitize address --show-bin-path)
mkdir -p Fuzz/artifacts
status=0
for target in FrameDecoder:frames Connection:connection FieldTable:fieldtable Config:config Store:store \
  Management:management; do
  name=${target%%:*}Fuzzer
  corpus=Fuzz/corpus/${target##*:}
  extra=()
  environment=()
  # Creating a vhost gives it weak references (its exchanges' contexts), and Swift keeps the weak side table's
  # address in tagged bits of the object's header, where LeakSanitizer cannot see it: a live vhost's side table is
  # reported as leaked. WarrenCoreTests ("a removed vhost is freed ...") checks that removed vhosts are freed.
  if [ "$name" = ManagementFuzzer ]; then extra=(-detect_leaks=0); environment=(ASAN_OPTIONS=detect_leaks=0); fi
  scratch=$(mktemp -d /tmp/warren-fuzz.XXXXXX)
  echo "== $name for $seconds s from $corpus"
  if ! env "${environment[@]}" "$bin/$name" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "${extra[@]}" \
    -artifact_prefix=Fuzz/artifacts/"$name"- "$scratch" "$corpus" 2>&1 | tail -n 12; then
    status=1
  fi
  rm -rf "$scratch"
done
exit $status
