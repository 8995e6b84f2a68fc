#!/usr/bin/env bash
# Hostile tar layers through `cista image unpack`, with umoci as the peer.
#
# Usage: tests/integration/test_hostile_tar.sh [path/to/cista]   (default build/src/cli/cista)
#
# gen_hostile_tars.py writes one tar per attack (names with "..", absolute
# names, symlinks out of the root, hard links out, device nodes, root type
# changes, whiteouts through symlinks, ...) and a manifest of what cista must
# do with each. Every tar becomes a one-layer OCI image (umoci new + umoci raw
# add-layer) and is unpacked by cista and by `umoci unpack --rootless`.
#
# Asserted for cista, per case:
#   - nothing outside its target changed: the sentinel directory the tars aim
#     at, the images, and the work directory (no staging left behind);
#   - "refused": non-zero exit, the error names the entry, no target left;
#   - "rerooted": success, and the manifest's "inside" path exists in the target.
# umoci's outcome is logged beside it for the record (and a sentinel change
# by umoci is reported, not failed: it is not our code).
# Output is TAP; the exit status is non-zero when any cista check failed.
# KEEP_WORK=1 keeps the work directory (corpus, images, both results, logs).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cista=${1:-build/src/cli/cista}
case $cista in /*) ;; *) cista=$PWD/$cista ;; esac

if [ ! -x "$cista" ]; then
    echo "1..0 # SKIP cista binary not found at $cista"
    exit 77
fi
if ! command -v umoci >/dev/null || ! command -v python3 >/dev/null; then
    echo "1..0 # SKIP needs umoci and python3"
    exit 77
fi

work=$(mktemp -d /tmp/cista-hostile-XXXXXX)
cleanup() {
    if [ -n "${KEEP_WORK:-}" ]; then
        echo "# work directory kept: $work"
        return
    fi
    # Unpacked trees can hold 0000 directories; make them removable first.
    chmod -R u+rwX "$work" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sent=$work/sentinel
mkdir -p "$sent/etc" "$work/images" "$work/out" "$work/umoci" "$work/logs"
echo victim >"$sent/victim"
echo "host passwd" >"$sent/etc/passwd"
chmod 0640 "$sent/victim"

python3 "$here/gen_hostile_tars.py" "$work/corpus" "$sent" || {
    echo "Bail out! corpus generation failed"
    exit 1
}

# Everything cista must leave alone: type, mode, owner, size, mtime and
# content hash of every file outside the cista and umoci targets.
snapshot() {
    (
        cd "$work" || exit 1
        find . -path ./out -prune -o -path ./umoci -prune -o -path ./logs -prune -o \
            -printf '%p %y %m %U:%G %s %T@ %l\n' | LC_ALL=C sort
        find . -path ./out -prune -o -path ./umoci -prune -o -path ./logs -prune -o \
            -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
    )
}

sentinel_state() {
    (cd "$sent" && find . -printf '%p %y %m %s %T@ %l\n' | LC_ALL=C sort &&
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}

# Build the one-layer images first, so the snapshot covers them.
n=0
while IFS=$'\t' read -r name _; do
    img=$work/images/$name
    if ! { umoci init --layout "$img" && umoci new --image "$img:t" &&
        umoci raw add-layer --image "$img:t" "$work/corpus/$name.tar"; } \
        >"$work/logs/$name.build" 2>&1; then
        echo "Bail out! umoci could not build the image for $name:"
        cat "$work/logs/$name.build"
        exit 1
    fi
    n=$((n + 1))
done <"$work/corpus/manifest.tsv"

cut -f1 "$work/corpus/manifest.tsv" >"$work/names"
echo "1..$n"
before=$(snapshot)
sent_before=$(sentinel_state)
failures=0
i=0

while IFS=$'\t' read -r name expect fragment inside desc; do
    i=$((i + 1))
    img=$work/images/$name
    out=$work/out/$name
    log=$work/logs/$name.cista
    problems=()

    "$cista" image unpack "oci:$img:t" "$out" >"$log" 2>&1 </dev/null
    rc=$?

    after=$(snapshot)
    if [ "$after" != "$before" ]; then
        problems+=("cista changed something outside its target:")
        problems+=("$(diff <(echo "$before") <(echo "$after") | head -20)")
        before=$after
    fi
    # Beside the targets, nothing: no staging directory may outlive a run.
    stray=$(find "$work/out" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -v -x -F -f "$work/names")
    [ -n "$stray" ] && problems+=("left beside the target: $stray")

    msg=$(tr '\n' ' ' <"$log" | cut -c1-300)
    case $expect in
    refused)
        if [ "$rc" -eq 0 ]; then
            problems+=("expected a refusal, cista succeeded")
        else
            [ "$fragment" != "-" ] && ! grep -qF -- "$fragment" "$log" &&
                problems+=("error does not name the entry ($fragment): $msg")
            [ -e "$out" ] && problems+=("target $out left behind after a refusal")
        fi
        cista_says="refused: $msg"
        ;;
    rerooted)
        if [ "$rc" -ne 0 ]; then
            problems+=("expected success (re-rooted), cista failed: $msg")
        elif [ "$inside" != "-" ] && [ ! -e "$out/$inside" ] && [ ! -L "$out/$inside" ]; then
            problems+=("expected $inside inside the target, it is not there")
        fi
        cista_says="applied inside the target"
        ;;
    *)
        problems+=("bad manifest expectation '$expect'")
        ;;
    esac
    # Whatever the outcome, no whiteout may be materialised.
    if [ -d "$out" ] && find "$out" -name '.wh.*' | grep -q .; then
        problems+=("whiteout file materialised in the target")
    fi

    # The peer, for the record.
    ulog=$work/logs/$name.umoci
    umoci unpack --rootless --image "$img:t" "$work/umoci/$name" >"$ulog" 2>&1 </dev/null
    urc=$?
    sent_now=$(sentinel_state)
    if [ "$sent_now" != "$sent_before" ]; then
        umoci_says="ESCAPED: changed the sentinel"
        # Put the sentinel back so later cases start clean.
        rm -rf "$sent" && mkdir -p "$sent/etc" && echo victim >"$sent/victim" &&
            echo "host passwd" >"$sent/etc/passwd" && chmod 0640 "$sent/victim"
        before=$(snapshot)
    elif [ "$urc" -eq 0 ]; then
        umoci_says="applied"
    else
        umoci_says="refused: $(grep -v '^\s*$' "$ulog" | tail -1 | cut -c1-200)"
    fi

    if [ ${#problems[@]} -eq 0 ]; then
        echo "ok $i - $name ($expect)"
    else
        failures=$((failures + 1))
        echo "not ok $i - $name ($expect): $desc"
        printf '#   %s\n' "${problems[@]}"
    fi
    echo "#   cista: $cista_says"
    echo "#   umoci: $umoci_says"
done <"$work/corpus/manifest.tsv"

echo "# $((i - failures)) of $i hostile layers handled as expected by cista"
[ "$failures" -eq 0 ]
