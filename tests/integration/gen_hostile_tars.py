#!/usr/bin/env python3
"""Write a corpus of hostile tar layers, one .tar per case, plus a manifest.

Usage:
  gen_hostile_tars.py OUTDIR SENTINEL      integration corpus (test_hostile_tar.sh)
  gen_hostile_tars.py --seeds OUTDIR       seed corpus for fuzz/fuzz_tar.c

SENTINEL is an absolute path outside the unpack target; the tars aim at it
by absolute names, absolute and relative symlinks, ".." names, hard links and
whiteouts. With --seeds the sentinel is the fuzz harness's "../sentinel"
(a sibling of its root) and the trailing tar padding is cut.

OUTDIR/manifest.tsv has one line per case, tab-separated:
  name  expected  fragment  inside  description
(an empty field is written as "-")
expected is what cista must do: "refused" (clean error whose message
contains fragment, nothing left behind) or "rerooted" (applied, with every
write inside the target; inside, when not "-", must exist in the result).
Only the Python standard library is used (tarfile).
"""
import io
import os
import sys
import tarfile

MTIME = 1500000000


class Layer:
    def __init__(self, fmt=tarfile.PAX_FORMAT):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=fmt)

    def _info(self, name, type_, mode):
        ti = tarfile.TarInfo(name)
        ti.type = type_
        ti.mode = mode
        ti.mtime = MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def file(self, name, data=b"", mode=0o644, pax=None):
        ti = self._info(name, tarfile.REGTYPE, mode)
        ti.size = len(data)
        if pax:
            ti.pax_headers = pax
        self.tar.addfile(ti, io.BytesIO(data))
        return self

    def dir(self, name, mode=0o755):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))
        return self

    def symlink(self, name, target):
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)
        return self

    def hardlink(self, name, target):
        ti = self._info(name, tarfile.LNKTYPE, 0o644)
        ti.linkname = target
        self.tar.addfile(ti)
        return self

    def node(self, name, type_, major=0, minor=0):
        ti = self._info(name, type_, 0o600)
        ti.devmajor, ti.devminor = major, minor
        self.tar.addfile(ti)
        return self

    def bytes(self, trim=False):
        self.tar.close()
        data = self.buf.getvalue()
        if trim:
            # Keep the two zero blocks that end the archive, drop the record padding.
            end = len(data.rstrip(b"\0"))
            end = (end + 511) // 512 * 512 + 1024
            data = data[:end]
        return data


def cases(sent):
    """Yield (name, expected, fragment, inside, description, Layer).

    sent is the sentinel as an absolute path ("/tmp/x/sentinel") or, for fuzz
    seeds, as "../sentinel" relative to the root.
    """
    up = "../" * 16
    rel_sent = sent.lstrip("/")
    abs_sent = sent if sent.startswith("/") else "/" + rel_sent
    # Where a re-rooted absolute path to the sentinel lands inside the target.
    inside_sent = abs_sent.lstrip("/")
    if not sent.startswith("/"):
        inside_sent = "sentinel"  # "../sentinel" clamps to ROOT/sentinel

    yield ("normal_tree", "rerooted", "", "usr/bin/sh",
           "an ordinary layer (control case): directories, files, links, whiteouts",
           Layer().dir("./").dir("etc").file("etc/hostname", b"box\n")
           .dir("usr").dir("usr/bin").file("usr/bin/busybox", b"\x7fELF", mode=0o755)
           .hardlink("usr/bin/sh", "usr/bin/busybox").symlink("bin", "usr/bin")
           .dir("var/cache", mode=0o700).file("var/cache/.wh..wh..opq")
           .file("etc/.wh.motd").node("run/initctl", tarfile.FIFOTYPE))
    yield ("dotdot_name", "rerooted", "", inside_sent + "/victim",
           "file named ../../..<sentinel>/victim",
           Layer().file(up + rel_sent + "/victim", b"pwned"))
    yield ("abs_name", "rerooted", "", abs_sent.lstrip("/") + "/abs",
           "file with an absolute name inside the sentinel",
           Layer().file(abs_sent + "/abs", b"pwned"))
    yield ("symlink_abs_then_write", "rerooted", "", abs_sent.lstrip("/") + "/victim",
           "evil -> <sentinel> (absolute), then evil/victim",
           Layer().symlink("evil", abs_sent).file("evil/victim", b"pwned"))
    yield ("symlink_rel_then_write", "rerooted", "", inside_sent + "/victim",
           "evil -> ../../..<sentinel>, then evil/victim",
           Layer().symlink("evil", up + rel_sent).file("evil/victim", b"pwned"))
    yield ("symlink_root_then_etc", "rerooted", "", "etc/passwd",
           "evil -> /, then evil/etc/passwd (lands in ROOT/etc/passwd)",
           Layer().symlink("evil", "/").file("evil/etc/passwd", b"root:x:0:0"))
    yield ("symlink_chain_out", "rerooted", "", inside_sent + "/victim",
           "a -> b, b -> ../../..<sentinel>, then a/victim",
           Layer().symlink("a", "b").symlink("b", up + rel_sent).file("a/victim", b"pwned"))
    yield ("symlink_dotdot_name", "rerooted", "", inside_sent + "/lnk",
           "a symlink whose own name climbs out",
           Layer().symlink(up + rel_sent + "/lnk", "/etc/passwd"))
    yield ("file_replaces_symlink_out", "rerooted", "", "s",
           "s -> <sentinel>/victim, then a regular file s (must not follow)",
           Layer().symlink("s", abs_sent + "/victim").file("s", b"pwned", mode=0o777))
    yield ("dir_replaces_symlink_out", "rerooted", "", "s",
           "s -> <sentinel>, then directory s/ 0777 (CVE-2021-32760 shape)",
           Layer().symlink("s", abs_sent).dir("s", mode=0o777))
    yield ("hardlink_abs", "refused", 'entry "hl"', "-",
           "hard link to <sentinel>/victim (absolute; not inside the target)",
           Layer().hardlink("hl", abs_sent + "/victim"))
    yield ("hardlink_dotdot", "refused", 'entry "hl"', "-",
           "hard link to ../../..<sentinel>/victim",
           Layer().hardlink("hl", up + rel_sent + "/victim"))
    yield ("hardlink_via_symlink_out", "refused", 'entry "hl"', "-",
           "s -> <sentinel>, hard link to s/victim",
           Layer().symlink("s", abs_sent).hardlink("hl", "s/victim"))
    yield ("hardlink_to_dir", "refused", 'entry "hl"', "-",
           "hard link to a directory",
           Layer().dir("d").hardlink("hl", "d"))
    yield ("hardlink_to_symlink_out", "refused", 'entry "hl"', "-",
           "s -> <sentinel>/victim, hard link to s",
           Layer().symlink("s", abs_sent + "/victim").hardlink("hl", "s"))
    yield ("hardlink_before_target", "refused", 'entry "early"', "-",
           "hard link listed before its target",
           Layer().hardlink("early", "later").file("later", b"x"))
    yield ("hardlink_ok", "rerooted", "", "h",
           "a legitimate hard link (control case)",
           Layer().file("f", b"data").hardlink("h", "f"))
    yield ("hardlink_through_root_symlink", "rerooted", "", "hl",
           "evil -> /, hard link to evil/etc/passwd (inside the target)",
           Layer().symlink("evil", "/").file("etc/passwd", b"pw")
           .hardlink("hl", "evil/etc/passwd"))
    yield ("root_dot_symlink", "refused", 'entry "."', "-",
           "'.' as a symlink to <sentinel>, then a file (CVE-2021-29136)",
           Layer().symlink(".", abs_sent).file("victim", b"pwned"))
    yield ("root_slash_symlink", "refused", 'entry "/"', "-",
           "'/' as a symlink to <sentinel>",
           Layer().symlink("/", abs_sent).file("victim", b"pwned"))
    yield ("root_dotdot_fifo", "refused", 'entry "a/../.."', "-",
           "a fifo whose name cleans to the root",
           Layer().node("a/../..", tarfile.FIFOTYPE))
    yield ("char_device", "refused", 'entry "dev/null"', "-",
           "character device 1:3",
           Layer().node("dev/null", tarfile.CHRTYPE, 1, 3))
    yield ("block_device", "refused", 'entry "dev/sda"', "-",
           "block device 8:0",
           Layer().node("dev/sda", tarfile.BLKTYPE, 8, 0))
    yield ("device_escape_name", "refused", 'entry "dev/\\x1b]0;pwned\\x07"', "-",
           "a device whose name carries terminal escapes (message must quote them)",
           Layer().node("dev/\x1b]0;pwned\x07", tarfile.CHRTYPE, 1, 5))
    yield ("whiteout_dotdot", "rerooted", "", "-",
           "whiteout named ../../..<sentinel>/.wh.victim",
           Layer().file(up + rel_sent + "/.wh.victim"))
    yield ("whiteout_through_symlink", "rerooted", "", "-",
           "s -> <sentinel>, then s/.wh.victim",
           Layer().symlink("s", abs_sent).file("s/.wh.victim"))
    yield ("whiteout_through_rel_symlink", "rerooted", "", "-",
           "s -> ../../..<sentinel>, then s/.wh.victim",
           Layer().symlink("s", up + rel_sent).file("s/.wh.victim"))
    yield ("opaque_through_symlink", "rerooted", "", "-",
           "s -> <sentinel>, then s/.wh..wh..opq",
           Layer().symlink("s", abs_sent).file("s/.wh..wh..opq"))
    yield ("opaque_root", "rerooted", "", "-",
           "an opaque marker for the root itself",
           Layer().file("keep", b"k").file(".wh..wh..opq"))
    yield ("whiteout_dir_component", "refused", 'entry "a/.wh.b/c"', "-",
           "a .wh. name used as a directory",
           Layer().file("a/.wh.b/c", b"x"))
    yield ("whiteout_of_dot", "refused", 'entry ".wh.."', "-",
           "a whiteout of '.'",
           Layer().file(".wh.."))
    yield ("symlink_loop", "refused", 'entry "l1/x"', "-",
           "l1 -> l2 -> l1, then l1/x",
           Layer().symlink("l1", "l2").symlink("l2", "l1").file("l1/x", b"x"))
    chain = Layer()
    for i in range(41):
        chain.symlink("c%d" % i, "c%d" % (i + 1) if i < 40 else "/tmp")
    yield ("symlink_41_chain", "refused", 'entry "c0/x"', "-",
           "41 chained symlinks (the limit is 40), then c0/x",
           chain.file("c0/x", b"x"))
    longname = "a/" * 60 + "../" * 80 + rel_sent + "/longvictim"
    yield ("pax_long_dotdot", "rerooted", "", inside_sent + "/longvictim",
           "a pax path record (> 255 bytes) climbing out",
           Layer().file(longname, b"pwned"))
    yield ("gnu_longname_abs", "rerooted", "", abs_sent.lstrip("/") + "/" + "x" * 120,
           "GNU ././@LongLink with an absolute name",
           Layer(tarfile.GNU_FORMAT).file(abs_sent + "/" + "x" * 120, b"pwned"))
    yield ("duplicate_file_then_dir", "rerooted", "", "x/y",
           "file x, directory x/, file x/y (last one wins)",
           Layer().file("x", b"file").dir("x").file("x/y", b"y"))
    yield ("fifo", "rerooted", "", "run/fifo",
           "a fifo (allowed)",
           Layer().node("run/fifo", tarfile.FIFOTYPE))
    yield ("setuid_file", "rerooted", "", "bin/su",
           "a setuid-root file (kept as the tar says)",
           Layer().file("bin/su", b"#!/bin/sh\n", mode=0o4755))
    yield ("xattr_trusted_security", "rerooted", "", "f",
           "trusted.overlay.opaque and security.* xattrs (dropped; user.* kept)",
           Layer().file("f", b"x", pax={
               "SCHILY.xattr.trusted.overlay.opaque": "y",
               "SCHILY.xattr.security.selinux": "system_u:object_r:shadow_t:s0",
               "SCHILY.xattr.user.note": "kept"}))
    yield ("empty_name", "refused", "has no name", "-",
           "an entry with an empty name",
           Layer().file("", b"x"))
    yield ("non_ascii_names", "rerooted", "", "caf\u00e9",
           "UTF-8 names (pax) and a raw 0xe9 byte (ustar), kept byte for byte",
           Layer().file("caf\u00e9", b"x").file("\u65e5\u672c/\u8a9e", b"x"))
    yield ("raw_byte_name", "rerooted", "", "-",
           "a ustar name with a raw 0xe9 byte",
           Layer(tarfile.USTAR_FORMAT).file("lat\udce9n", b"x"))
    yield ("readonly_dir_then_file", "rerooted", "", "ro/f",
           "a 0555 directory, then a file inside it",
           Layer().dir("ro", mode=0o555).file("ro/f", b"f"))


def main(argv):
    seeds = len(argv) == 3 and argv[1] == "--seeds"
    if not seeds and len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    outdir = argv[2] if seeds else argv[1]
    sent = "../sentinel" if seeds else argv[2]
    if not seeds and not sent.startswith("/"):
        sys.stderr.write("SENTINEL must be an absolute path\n")
        return 2
    os.makedirs(outdir, exist_ok=True)
    lines = []
    for name, expected, fragment, inside, desc, layer in cases(sent):
        with open(os.path.join(outdir, name + ".tar"), "wb") as f:
            f.write(layer.bytes(trim=seeds))
        # "-" for empty fields: shells split tab-separated lines on runs of tabs.
        lines.append("\t".join([name, expected, fragment or "-", inside, desc]))
    if not seeds:
        with open(os.path.join(outdir, "manifest.tsv"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
