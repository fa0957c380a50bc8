#!/usr/bin/env bash
# Writes the seeds of fuzz_image and fuzz_dicom (fuzz/corpus/{image,dicom}/) with DCMTK's own tools: small
# DICOM files in each accepted transfer syntax and pixel format, and PNG / JPEG files rendered from them.
# Usage: fuzz/gen_corpus_image.sh   (needs dcmtk and python3; scripts/install-deps installs both)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
img=$here/corpus/image dcm=$here/corpus/dicom
rm -rf "$img" "$dcm"; mkdir -p "$img" "$dcm"

# dump(photo, bits, signed, window, samples) -> DCMTK dump text of a 16 x 12 image (a gradient)
dump() {
  python3 - "$@" <<'PY'
import sys
photo, bits, signed, window, spp = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1", int(sys.argv[5])
w, h = 16, 12
print("(0008,0016) UI =SecondaryCaptureImageStorage")
print("(0008,0018) UI 1.2.826.0.1.3680043.2.1125.7")
print("(0008,1140) SQ (Sequence with undefined length #=1)")
print("  (fffe,e000) na (Item with undefined length #=1)")
print("    (0008,1150) UI =CTImageStorage")
print("  (fffe,e00d) na (ItemDelimitationItem)")
print("(fffe,e0dd) na (SequenceDelimitationItem)")
print("(0010,0010) PN [SEED^NAME]")
print("(0028,0002) US %d" % spp)
print("(0028,0004) CS [%s]" % photo)
if spp == 3:
    print("(0028,0006) US 0")
print("(0028,0010) US %d" % h)
print("(0028,0011) US %d" % w)
print("(0028,0100) US %d" % bits)
print("(0028,0101) US %d" % (12 if bits == 16 else 8))
print("(0028,0102) US %d" % (11 if bits == 16 else 7))
print("(0028,0103) US %d" % (1 if signed else 0))
if window:
    print("(0028,1050) DS [40\\400]")
    print("(0028,1051) DS [400\\80]")
if bits == 16:
    print("(0028,1052) DS [-1024]")
    print("(0028,1053) DS [1]")
vals = []
for y in range(h):
    for x in range(w):
        for c in range(spp):
            v = (x * 200 + y * 90 + c * 500) % 4096 if bits == 16 else (x * 15 + y * 20 + c * 60) % 256
            if bits == 16 and signed:
                v -= 2048
            vals.append(v & 0xffff if bits == 16 else v)
if bits == 16:
    print("(7fe0,0010) OW " + "\\".join("%04x" % v for v in vals))
else:
    print("(7fe0,0010) OB " + "\\".join("%02x" % v for v in vals))
PY
}

dump MONOCHROME2 16 1 1 1 > "$tmp/m2s.dump"
dump MONOCHROME1 16 0 0 1 > "$tmp/m1u.dump"
dump MONOCHROME2 8 0 0 1 > "$tmp/m2b.dump"
dump RGB 8 0 0 3 > "$tmp/rgb.dump"
dump2dcm -q +te "$tmp/m2s.dump" "$tmp/m2s-explicit.dcm"
dump2dcm -q +te -e "$tmp/m2s.dump" "$tmp/m2s-explicit-undef.dcm"
dump2dcm -q +ti "$tmp/m1u.dump" "$tmp/m1u-implicit.dcm"
dump2dcm -q +ti -e "$tmp/m2b.dump" "$tmp/m2b-implicit-undef.dcm"
dump2dcm -q +te "$tmp/rgb.dump" "$tmp/rgb-explicit.dcm"

# PNG (interlaced, plain, 16-bit) and JPEG renderings, and the JPEGs back into DICOM (JPEG Baseline)
dcmj2pnm -q +on "$tmp/m2s-explicit.dcm" "$img/gray-interlaced.png"
dcmj2pnm -q +on -il "$tmp/m2s-explicit.dcm" "$img/gray.png"
dcmj2pnm -q +on2 -il "$tmp/m2s-explicit.dcm" "$img/gray16.png"
dcmj2pnm -q +on -il "$tmp/rgb-explicit.dcm" "$img/rgb.png"
dcmj2pnm -q +oj "$tmp/m2b-implicit-undef.dcm" "$img/gray.jpg"
dcmj2pnm -q +oj "$tmp/rgb-explicit.dcm" "$img/rgb.jpg"
img2dcm -q -k 'PatientName=SEED^NAME' "$img/gray.jpg" "$tmp/gray-jpeg.dcm"
img2dcm -q "$img/rgb.jpg" "$tmp/rgb-jpeg.dcm"

for f in "$tmp"/*.dcm; do
  cp "$f" "$img/"
  tail -c +133 "$f" > "$dcm/$(basename "$f" .dcm).bin"   # fuzz_dicom adds the preamble and "DICM"
done
ls -l "$img" "$dcm" | awk 'NF > 5 {print $5, $9}'
