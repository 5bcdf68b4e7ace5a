// png: uint8 (H, W, C) picture -> the zlib stream of a PNG's IDAT chunk (the overlay and grid PNGs
// of `daam-fast explain`). Every row gets the "Sub" filter (filter byte 1, then each byte minus
// the byte C to its left, modulo 256), and the filtered rows are deflated as one dynamic-Huffman
// block whose only matches are runs of one byte (distance 1, lengths 3 .. 258, found greedily as
// zlib's Z_RLE strategy finds them: a flat area is zeros after the filter). Two passes over the
// filtered rows: the first finds the runs (8 positions per 64-bit word) and counts the symbols,
// canonical Huffman codes are built from the counts (at most 14 bits, so four literals fit the
// 64-bit bit buffer between two stores), the second writes the codes. The exact size is known
// before writing: when stored blocks would be smaller (noise) they are written instead. zlib
// header 0x78 0x01, Adler-32 of the filtered rows (SSE2 where there is SSE2) at the end.
// zlib (level 1, Z_RLE) spends 4-6 ns a byte on rendered overlays; this costs 0.7 (writing the
// codes 0.4, counting 0.2, runs 0.1, Adler-32 0.05) for files 0-1 % larger (figures in
// encode.png_bytes). Tried and not used: matches at distance C (a repeated filtered pixel) would
// cover < 0.1 % of the bytes; one block per 8-96 rows makes files 0.1-2 % smaller for a Huffman
// build (3-5 us) per block; the run search in SSE2 saved < 4 %; codes and lengths packed in one
// table cost 20 % more to write than two tables.
#pragma once
#include <cstdint>
#include <string>

#include "common.h"

namespace daam {

struct PngArgs {
  const unsigned char* image;   // (H, W, C) uint8 contiguous
  int64_t H, W;
  int C;                        // 1: grey, 3: RGB, 4: RGBA
};

inline void check_png_args(const PngArgs& a) {
  DAAM_CHECK(a.image, "null pointer");
  DAAM_CHECK(a.H > 0 && a.W > 0, "sizes must be positive");
  DAAM_CHECK(a.C == 1 || a.C == 3 || a.C == 4, "C must be 1 (grey), 3 (RGB) or 4 (RGBA)");
  DAAM_CHECK(a.H <= 0x7FFFFFFF && a.W <= 0x7FFFFFFF, "a PNG side is at most 2^31 - 1 pixels");
  // symbol counts are 32-bit
  DAAM_CHECK(a.H <= int64_t(0xFFFFFFFF) / (a.W * a.C + 1), "the filtered rows must hold less than 4 GiB");
}

// the zlib stream (header, one dynamic block or stored blocks, Adler-32) of the Sub-filtered rows.
std::string png_idat_cpu(const PngArgs& a);

}  // namespace daam
