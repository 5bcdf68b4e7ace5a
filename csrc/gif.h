// gif: uint8 RGB frames -> an animated GIF in one call (the GIF output of `daam-fast explain`).
// Each pixel takes the palette entry nearest (squared RGB distance, lowest index on a tie) to the
// centre of its 5-bit cell (8 x 8 x 8 levels; Pillow's palette cache uses 6-bit cells); the cell's
// answer is cached, so a search runs once per cell met (the mean error grows by 0.1 level over
// exact colours, while the searches fall 2.5x on a 64 x 64 GIF and 50x on a 480 x 360 one). The indices are then LZW-coded
// (GIF89a, 12-bit codes, a clear code when the table is full) with one global colour table, a
// NETSCAPE2.0 loop block and one graphic control block (the delay) per frame.
// Pillow spends ~1.7 ms filling its cache for every new palette, more than the whole GIF of a
// 64 x 64 image should cost (benchmarks/NOTES.md).
#pragma once
#include <cstdint>
#include <string>

#include "common.h"

namespace daam {

struct GifArgs {
  const unsigned char* frames;    // (L, H, W, 3) uint8 contiguous
  int64_t L, H, W;
  const unsigned char* palette;   // (K, 3) uint8, 1 <= K <= 256
  int K;
  int delay_cs;                   // frame delay, hundredths of a second
  int loop;                       // NETSCAPE loop count, 0: for ever
  const int16_t* cells = nullptr; // (32768,) palette entry of every 5-bit cell (palette_cpu), or null:
                                  // each pixel then takes the entry nearest its cell's centre
};

inline void check_gif_args(const GifArgs& a) {
  DAAM_CHECK(a.frames && a.palette, "null pointer");
  DAAM_CHECK(a.L > 0 && a.H > 0 && a.W > 0, "sizes must be positive");
  DAAM_CHECK(a.H <= 65535 && a.W <= 65535, "a GIF side is at most 65535 pixels");
  DAAM_CHECK(a.K >= 1 && a.K <= 256, "the palette must hold 1 to 256 colours");
  DAAM_CHECK(a.delay_cs >= 0 && a.delay_cs <= 65535, "delay must be 0 .. 65535 hundredths of a second");
  DAAM_CHECK(a.loop >= 0 && a.loop <= 65535, "loop must be 0 .. 65535");
}

// A palette of at most K colours for n RGB pixels (every ceil(n / max_samples)-th pixel is
// counted): variance-based median cut over their 5-bit histogram. The box of cells whose best
// cut (of 31 per axis) removes the most squared error is split next; each box gives the mean
// colour of its pixels. Fewer than K colours when fewer cells are met. Returns the number of
// colours written to `out` (3 bytes each). Replaces PIL's octree: the same mean error or lower,
// and no GIL held (benchmarks/NOTES.md). The cuts also split the whole 5-bit cube into one region
// per box; with `cells_out` (32768 int16), every cell's box is written there: a pixel mapped to
// its cell's box is 0.06-0.15 level farther from its colour than the nearest entry would be, and
// still nearer than with PIL's palette, for a table look-up instead of a search.
int palette_cpu(const unsigned char* rgb, int64_t n, int K, int64_t max_samples, unsigned char* out,
                int16_t* cells_out = nullptr);
// indices (n,) of the n RGB pixels (rule above); `out` has n bytes.
void palette_index_cpu(const unsigned char* rgb, int64_t n, const unsigned char* palette, int K, unsigned char* out);
// the whole GIF file.
std::string gif_encode_cpu(const GifArgs& a);

}  // namespace daam
