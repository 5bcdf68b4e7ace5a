// See csrc/gif.h.
#include "gif.h"

#include <algorithm>
#include <cstring>
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
    int best = 0, bestd = 1 << 30;
    const Cand* c = cand_.data() + start_[box];
    const Cand* end = c + count_[box];
    for (; c != end && c->dmin <= bestd; ++c) {
      const int dr = c->r - r, dg = c->g - g, db = c->b - b;
      const int d = dr * dr + dg * dg + db * db;
      if (d < bestd || (d == bestd && c->k < best)) {
        bestd = d;
        best = c->k;
      }
    }
    return best;
  }

 private:
  struct Cand {
    int dmin, k, r, g, b;
  };

  void fill(int box) {
    const int lo[3] = {(box >> 4) << 6, ((box >> 2) & 3) << 6, (box & 3) << 6};
    int dmin[256], bound = 1 << 30;
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
    start_[box] = static_cast<int>(cand_.size());
    for (int k = 0; k < K_; ++k)
      if (dmin[k] <= bound) cand_.push_back(Cand{dmin[k], k, p_[0][k], p_[1][k], p_[2][k]});
    std::sort(cand_.begin() + start_[box], cand_.end(),
              [](const Cand& x, const Cand& y) { return x.dmin < y.dmin || (x.dmin == y.dmin && x.k < y.k); });
    count_[box] = static_cast<int>(cand_.size()) - start_[box];
  }

  int K_;
  int p_[3][256];
  std::vector<int> start_, count_;
  std::vector<Cand> cand_;
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
  palette_index_cpu(a.frames, a.L * frame, a.palette, a.K, idx.data());

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
