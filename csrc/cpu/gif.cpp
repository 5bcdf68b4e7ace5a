// See csrc/gif.h.
#include "gif.h"

#include <algorithm>
#include <climits>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <cstring>
#include <queue>
#include <utility>
#include <vector>

namespace daam {

namespace {

constexpr int kCells = 32 * 32 * 32;   // 5 bits per channel

// Nearest palette entry to a colour, searched only among the candidates of its coarse box
// (2 bits per channel, 64 levels a side): the entries whose smallest distance to the box is at
// most the smallest largest distance of any entry to it (every nearest entry of every colour in
// the box is one). Candidates are sorted by that smallest distance, and the search stops at the
// first one farther from the box than the best distance found: the rest cannot be nearer, nor
// tie. On a tie the lower index wins, so the answer equals a search over the whole palette.
// The candidates are kept as int16 columns in blocks of 8, searched 8 at a time with SSE2 (the
// x86-64 baseline; a scalar loop elsewhere): a block's keys are (distance << 8) | index, so one
// minimum gives the nearest entry and the lower index on a tie (0.61 -> 0.45 ms for the 6
// frames of a 64 x 64 GIF; benchmarks/NOTES.md).
class Nearest {
 public:
  Nearest(const unsigned char* palette, int K) : K_(K), start_(64, -1), count_(64, 0) {
    for (int k = 0; k < K; ++k) {
      p_[0][k] = palette[3 * k];
      p_[1][k] = palette[3 * k + 1];
      p_[2][k] = palette[3 * k + 2];
    }
  }

  int operator()(int r, int g, int b) {
    const int box = ((r >> 6) << 4) | ((g >> 6) << 2) | (b >> 6);
    if (start_[box] < 0) fill(box);
    const int s = start_[box], n = count_[box];
    const int32_t* dmin = dmin_.data() + s;
    const int16_t* cr = r_.data() + s;
    const int16_t* cg = g_.data() + s;
    const int16_t* cb = b_.data() + s;
    const int16_t* ck = k_.data() + s;
    int32_t bestkey = INT32_MAX;                 // (distance << 8) | index: the lower index on a tie
#if defined(__SSE2__)
    const __m128i R = _mm_set1_epi16(static_cast<int16_t>(r)), G = _mm_set1_epi16(static_cast<int16_t>(g)),
                  B = _mm_set1_epi16(static_cast<int16_t>(b)), zero = _mm_setzero_si128();
    for (int i = 0; i < n; i += 8) {
      if (dmin[i] > (bestkey >> 8)) break;      // sorted: every later candidate is farther
      const __m128i dr = _mm_sub_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(cr + i)), R);
      const __m128i dg = _mm_sub_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(cg + i)), G);
      const __m128i db = _mm_sub_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(cb + i)), B);
      const __m128i kk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ck + i));
      const __m128i a0 = _mm_unpacklo_epi16(dr, dg), a1 = _mm_unpackhi_epi16(dr, dg);
      const __m128i b0 = _mm_unpacklo_epi16(db, zero), b1 = _mm_unpackhi_epi16(db, zero);
      __m128i d0 = _mm_add_epi32(_mm_madd_epi16(a0, a0), _mm_madd_epi16(b0, b0));
      __m128i d1 = _mm_add_epi32(_mm_madd_epi16(a1, a1), _mm_madd_epi16(b1, b1));
      d0 = _mm_or_si128(_mm_slli_epi32(d0, 8), _mm_unpacklo_epi16(kk, zero));
      d1 = _mm_or_si128(_mm_slli_epi32(d1, 8), _mm_unpackhi_epi16(kk, zero));
      __m128i m = min32(d0, d1);
      m = min32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
      m = min32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
      const int32_t v = _mm_cvtsi128_si32(m);
      if (v < bestkey) bestkey = v;
    }
#else
    for (int i = 0; i < n; ++i) {
      if (dmin[i] > (bestkey >> 8)) break;
      const int dr = cr[i] - r, dg = cg[i] - g, db = cb[i] - b;
      const int32_t v = ((dr * dr + dg * dg + db * db) << 8) | ck[i];
      if (v < bestkey) bestkey = v;
    }
#endif
    return bestkey & 0xFF;
  }

 private:
#if defined(__SSE2__)
  static __m128i min32(__m128i a, __m128i b) {   // SSE2 has no pminsd
    const __m128i gt = _mm_cmpgt_epi32(a, b);
    return _mm_or_si128(_mm_and_si128(gt, b), _mm_andnot_si128(gt, a));
  }
#endif

  void fill(int box) {
    const int lo[3] = {(box >> 4) << 6, ((box >> 2) & 3) << 6, (box & 3) << 6};
    int dmin[256], order[256], bound = 1 << 30, n = 0;
    for (int k = 0; k < K_; ++k) {
      int mn = 0, mx = 0;
      for (int c = 0; c < 3; ++c) {
        const int p = p_[c][k], a = lo[c], z = lo[c] + 63;
        const int out = p < a ? a - p : (p > z ? p - z : 0);
        const int far = p - a > z - p ? p - a : z - p;
        mn += out * out;
        mx += far * far;
      }
      dmin[k] = mn;
      if (mx < bound) bound = mx;
    }
    for (int k = 0; k < K_; ++k)
      if (dmin[k] <= bound) order[n++] = k;
    std::sort(order, order + n, [&dmin](int x, int y) { return dmin[x] < dmin[y] || (dmin[x] == dmin[y] && x < y); });
    start_[box] = static_cast<int>(dmin_.size());
    count_[box] = n;
    const int padded = (n + 7) & ~7;             // whole blocks of 8; padding: far away, never chosen
    for (int i = 0; i < padded; ++i) {
      const bool real = i < n;
      const int k = real ? order[i] : 0;
      dmin_.push_back(real ? dmin[k] : (1 << 30));
      r_.push_back(static_cast<int16_t>(real ? p_[0][k] : 1000));
      g_.push_back(static_cast<int16_t>(real ? p_[1][k] : 1000));
      b_.push_back(static_cast<int16_t>(real ? p_[2][k] : 1000));
      k_.push_back(static_cast<int16_t>(k));
    }
  }

  int K_;
  int p_[3][256];
  std::vector<int> start_, count_;
  std::vector<int32_t> dmin_;
  std::vector<int16_t> r_, g_, b_, k_;
};

// LZW, GIF flavour: variable code size from min_size + 1 up to 12 bits, LSB-first bit packing,
// data in sub-blocks of at most 255 bytes.
class Lzw {
 public:
  Lzw(std::string& out, int min_size) : out_(out), min_size_(min_size) {
    table_key_.resize(kHash);
    table_code_.resize(kHash);
  }

  void encode(const unsigned char* idx, int64_t n) {
    out_.push_back(static_cast<char>(min_size_));
    const int clear = 1 << min_size_, eoi = clear + 1;
    reset();
    put(clear);
    int prefix = idx[0];
    for (int64_t i = 1; i < n; ++i) {
      const int c = idx[i];
      const int32_t key = (prefix << 8) | c;
      uint32_t h = (static_cast<uint32_t>(key) * 2654435761u) >> (32 - kHashBits);
      int found = -1;
      while (table_key_[h] != -1) {
        if (table_key_[h] == key) {
          found = table_code_[h];
          break;
        }
        h = (h + 1) & (kHash - 1);
      }
      if (found >= 0) {
        prefix = found;
        continue;
      }
      put(prefix);
      if (next_ < 4096) {
        table_key_[h] = key;
        table_code_[h] = static_cast<int16_t>(next_);
        // the decoder grows its code size one code later than the encoder adds an entry
        if (next_ == (1 << size_) && size_ < 12) ++size_;
        ++next_;
      } else {
        put(clear);
        reset();
      }
      prefix = c;
    }
    put(prefix);
    if (next_ == (1 << size_) && size_ < 12) ++size_;
    put(eoi);
    if (nbits_ > 0) byte(static_cast<unsigned char>(acc_ & 0xFF));
    flush_block();
    out_.push_back('\0');          // block terminator
  }

 private:
  static constexpr int kHashBits = 13;
  static constexpr int kHash = 1 << kHashBits;   // > 4096 codes, load factor < 0.5

  void reset() {
    std::fill(table_key_.begin(), table_key_.end(), -1);
    size_ = min_size_ + 1;
    next_ = (1 << min_size_) + 2;
  }
  void put(int code) {
    acc_ |= static_cast<uint32_t>(code) << nbits_;
    nbits_ += size_;
    while (nbits_ >= 8) {
      byte(static_cast<unsigned char>(acc_ & 0xFF));
      acc_ >>= 8;
      nbits_ -= 8;
    }
  }
  void byte(unsigned char b) {
    block_[nblock_++] = b;
    if (nblock_ == 255) flush_block();
  }
  void flush_block() {
    if (nblock_ == 0) return;
    out_.push_back(static_cast<char>(nblock_));
    out_.append(reinterpret_cast<const char*>(block_), nblock_);
    nblock_ = 0;
  }

  std::string& out_;
  int min_size_, size_ = 0, next_ = 0;
  uint32_t acc_ = 0;
  int nbits_ = 0;
  unsigned char block_[255];
  int nblock_ = 0;
  std::vector<int32_t> table_key_;
  std::vector<int16_t> table_code_;
};

void u16(std::string& s, int v) {
  s.push_back(static_cast<char>(v & 0xFF));
  s.push_back(static_cast<char>((v >> 8) & 0xFF));
}

}  // namespace

int palette_cpu(const unsigned char* rgb, int64_t n, int K, int64_t max_samples, unsigned char* out,
                int16_t* cells_out) {
  DAAM_CHECK(rgb && out, "null pointer");
  DAAM_CHECK(n > 0, "no pixels");
  DAAM_CHECK(K >= 1 && K <= 256, "the palette must hold 1 to 256 colours");
  DAAM_CHECK(max_samples > 0 && max_samples <= (int64_t{1} << 23), "max_samples must be 1 .. 8388608");
  // the 5-bit histogram of the sampled pixels: occupied cells only, with their pixel sums
  struct Cell {
    int32_t cell, w, s[3];                      // int32: at most 8 M samples of at most 255
  };
  std::vector<int32_t> slot(kCells, -1);
  std::vector<Cell> cells;
  const int64_t step = (n + max_samples - 1) / max_samples;
  for (int64_t i = 0; i < n; i += step) {
    const unsigned char* p = rgb + 3 * i;
    const int cell = ((p[0] >> 3) << 10) | ((p[1] >> 3) << 5) | (p[2] >> 3);
    int32_t j = slot[cell];
    if (j < 0) {
      j = slot[cell] = static_cast<int32_t>(cells.size());
      cells.push_back(Cell{cell, 0, {0, 0, 0}});
    }
    Cell& c = cells[j];
    ++c.w;
    c.s[0] += p[0];
    c.s[1] += p[1];
    c.s[2] += p[2];
  }
  // boxes of cells, split greedily where the split removes the most squared error (between the
  // cells' means), at the best of the 31 cuts of the best axis; each box gives its mean colour.
  // Each box keeps its cells' sums per level of each axis: a split scans the smaller part's cells
  // and takes the other part's sums as the rest.
  struct Hist {
    int64_t v[3][32][4];                        // axis, level: pixels, sum r, g, b
  };
  struct Box {
    int lo, hi, axis, cut;
    double gain;
    int8_t from[3], to[3];                      // its region of the 5-bit cube: levels [from, to) per axis
  };
  std::vector<Hist> hists;
  hists.reserve(K);
  auto fill = [&cells](Hist& h, int lo, int hi) {
    std::memset(&h, 0, sizeof(Hist));
    for (int i = lo; i < hi; ++i) {
      const Cell& c = cells[i];
      const int q[3] = {c.cell >> 10, (c.cell >> 5) & 31, c.cell & 31};
      for (int a = 0; a < 3; ++a) {
        int64_t* e = h.v[a][q[a]];
        e[0] += c.w;
        e[1] += c.s[0];
        e[2] += c.s[1];
        e[3] += c.s[2];
      }
    }
  };
  auto best_split = [](Box& b, const Hist& h) {
    b.gain = 0.0;
    b.axis = -1;
    int64_t t[4] = {0, 0, 0, 0};
    for (int v = 0; v < 32; ++v)
      for (int k = 0; k < 4; ++k) t[k] += h.v[0][v][k];
    const double tw = static_cast<double>(t[0]);
    const double whole = (static_cast<double>(t[1]) * t[1] + static_cast<double>(t[2]) * t[2] +
                          static_cast<double>(t[3]) * t[3]) / tw;
    for (int a = 0; a < 3; ++a) {
      int64_t l[4] = {0, 0, 0, 0};
      for (int v = 0; v < 31; ++v) {
        if (h.v[a][v][0] == 0) continue;       // the same cut as the level before
        for (int k = 0; k < 4; ++k) l[k] += h.v[a][v][k];
        if (l[0] == t[0]) break;
        const double l1 = static_cast<double>(l[1]), l2 = static_cast<double>(l[2]), l3 = static_cast<double>(l[3]);
        const double r1 = static_cast<double>(t[1] - l[1]), r2 = static_cast<double>(t[2] - l[2]),
                     r3 = static_cast<double>(t[3] - l[3]);
        const double g = (l1 * l1 + l2 * l2 + l3 * l3) / static_cast<double>(l[0]) +
                         (r1 * r1 + r2 * r2 + r3 * r3) / static_cast<double>(t[0] - l[0]) - whole;
        if (g > b.gain) {
          b.gain = g;
          b.axis = a;
          b.cut = v + 1;
        }
      }
    }
  };
  std::vector<Box> boxes;
  boxes.reserve(K);
  std::vector<Cell> scratch(cells.size());
  boxes.push_back(Box{0, static_cast<int>(cells.size()), -1, 0, 0.0, {0, 0, 0}, {32, 32, 32}});
  hists.emplace_back();
  fill(hists[0], 0, boxes[0].hi);
  best_split(boxes[0], hists[0]);
  std::priority_queue<std::pair<double, int>> queue;     // (gain, -box): the lowest box on a tie
  queue.emplace(boxes[0].gain, 0);
  while (static_cast<int>(boxes.size()) < K && !queue.empty()) {
    const auto top = queue.top();
    queue.pop();
    const int pick = -top.second;
    if (boxes[pick].axis < 0 || boxes[pick].gain != top.first) continue;   // one cell, or split since
    const Box b = boxes[pick];
    const int shift = 10 - 5 * b.axis, cut = b.cut;
    // stable partition without branches (the side of a cell is a coin toss to the predictor):
    // every cell is stored at the left end and in the scratch buffer, and only the counts move;
    // the left end never passes the cell being read (std::partition: 1.5x slower here)
    int m = b.lo, k = 0;
    for (int i = b.lo; i < b.hi; ++i) {
      const Cell c = cells[i];
      const int left = ((c.cell >> shift) & 31) < cut;
      cells[m] = c;
      scratch[k] = c;
      m += left;
      k += 1 - left;
    }
    std::copy(scratch.begin(), scratch.begin() + k, cells.begin() + m);
    boxes[pick] = Box{b.lo, m, -1, 0, 0.0, {b.from[0], b.from[1], b.from[2]}, {b.to[0], b.to[1], b.to[2]}};
    boxes.push_back(Box{m, b.hi, -1, 0, 0.0, {b.from[0], b.from[1], b.from[2]}, {b.to[0], b.to[1], b.to[2]}});
    boxes[pick].to[b.axis] = static_cast<int8_t>(cut);      // the cut splits the region too
    boxes.back().from[b.axis] = static_cast<int8_t>(cut);
    hists.emplace_back();
    Hist& parent = hists[pick];
    Hist& child = hists.back();
    const bool left_small = m - b.lo <= b.hi - m;
    Hist& small = left_small ? parent : child;  // parent's slot becomes the left part
    Hist& large = left_small ? child : parent;
    if (left_small) {
      std::memcpy(&child, &parent, sizeof(Hist));
      fill(parent, b.lo, m);
    } else {
      fill(child, m, b.hi);
    }
    for (int a = 0; a < 3; ++a)
      for (int v = 0; v < 32; ++v)
        for (int k = 0; k < 4; ++k) large.v[a][v][k] -= small.v[a][v][k];
    best_split(boxes[pick], hists[pick]);
    best_split(boxes.back(), hists.back());
    const int last = static_cast<int>(boxes.size()) - 1;
    if (boxes[pick].axis >= 0) queue.emplace(boxes[pick].gain, -pick);
    if (boxes[last].axis >= 0) queue.emplace(boxes[last].gain, -last);
  }
  if (cells_out != nullptr) {                   // the regions tile the cube: every cell gets its box
    for (size_t i = 0; i < boxes.size(); ++i) {
      const Box& b = boxes[i];
      for (int r = b.from[0]; r < b.to[0]; ++r)
        for (int g = b.from[1]; g < b.to[1]; ++g)
          for (int c = b.from[2]; c < b.to[2]; ++c) cells_out[(r << 10) | (g << 5) | c] = static_cast<int16_t>(i);
    }
  }
  for (size_t i = 0; i < boxes.size(); ++i) {
    int64_t w = 0, s[3] = {0, 0, 0};
    for (int j = boxes[i].lo; j < boxes[i].hi; ++j) {
      w += cells[j].w;
      for (int k = 0; k < 3; ++k) s[k] += cells[j].s[k];
    }
    for (int k = 0; k < 3; ++k) out[3 * i + k] = static_cast<unsigned char>((s[k] + w / 2) / w);
  }
  return static_cast<int>(boxes.size());
}

void palette_index_cpu(const unsigned char* rgb, int64_t n, const unsigned char* palette, int K, unsigned char* out) {
  DAAM_CHECK(rgb && palette && out, "null pointer");
  DAAM_CHECK(K >= 1 && K <= 256, "the palette must hold 1 to 256 colours");
  Nearest nearest(palette, K);
  std::vector<int16_t> cache(kCells);
  std::memset(cache.data(), 0xFF, cache.size() * sizeof(int16_t));   // -1: not searched yet
  for (int64_t i = 0; i < n; ++i) {
    const int r = rgb[3 * i] >> 3, g = rgb[3 * i + 1] >> 3, b = rgb[3 * i + 2] >> 3;
    const int cell = (r << 10) | (g << 5) | b;
    int k = cache[cell];
    if (k < 0) {
      k = nearest(8 * r + 4, 8 * g + 4, 8 * b + 4);
      cache[cell] = static_cast<int16_t>(k);
    }
    out[i] = static_cast<unsigned char>(k);
  }
}

std::string gif_encode_cpu(const GifArgs& a) {
  check_gif_args(a);
  const int64_t frame = a.H * a.W;
  std::vector<unsigned char> idx(static_cast<size_t>(a.L * frame));
  if (a.cells != nullptr) {                   // each pixel: the palette entry of its cell (palette_cpu's boxes)
    for (int c = 0; c < kCells; ++c)
      DAAM_CHECK(a.cells[c] >= 0 && a.cells[c] < a.K, "a cell's palette entry is outside the palette");
    const int64_t n = a.L * frame;
    for (int64_t i = 0; i < n; ++i) {
      const unsigned char* p = a.frames + 3 * i;
      idx[i] = static_cast<unsigned char>(a.cells[((p[0] >> 3) << 10) | ((p[1] >> 3) << 5) | (p[2] >> 3)]);
    }
  } else {
    palette_index_cpu(a.frames, a.L * frame, a.palette, a.K, idx.data());
  }

  int bits = 1;                               // global colour table of 2^bits entries
  while ((1 << bits) < a.K) ++bits;
  const int min_size = bits < 2 ? 2 : bits;   // LZW minimum code size: 2 .. 8
  std::string s;
  s.reserve(static_cast<size_t>(a.L * frame / 2 + 1024));
  s.append("GIF89a", 6);
  u16(s, static_cast<int>(a.W));
  u16(s, static_cast<int>(a.H));
  s.push_back(static_cast<char>(0x80 | (7 << 4) | (bits - 1)));   // global table, 8-bit colour resolution
  s.push_back('\0');                                              // background index
  s.push_back('\0');                                              // pixel aspect ratio: unspecified
  for (int k = 0; k < (1 << bits); ++k)
    for (int c = 0; c < 3; ++c) s.push_back(static_cast<char>(k < a.K ? a.palette[3 * k + c] : 0));
  s.append("\x21\xFF\x0BNETSCAPE2.0\x03\x01", 16);               // loop block
  u16(s, a.loop);
  s.push_back('\0');
  for (int64_t l = 0; l < a.L; ++l) {
    s.append("\x21\xF9\x04\x04", 4);         // graphic control: disposal 1 (leave in place), no transparency
    u16(s, a.delay_cs);
    s.push_back('\0');
    s.push_back('\0');
    s.push_back('\x2C');                     // image descriptor: the whole screen, no local table
    u16(s, 0);
    u16(s, 0);
    u16(s, static_cast<int>(a.W));
    u16(s, static_cast<int>(a.H));
    s.push_back('\0');
    Lzw(s, min_size).encode(idx.data() + l * frame, frame);
  }
  s.push_back('\x3B');                       // trailer
  return s;
}

}  // namespace daam
