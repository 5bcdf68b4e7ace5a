// See csrc/png.h.
#include "png.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace daam {

namespace {

constexpr int kLitBits = 14;    // longest literal / length code: 7 + 4 * 14 bits fit the bit buffer
constexpr int kDistBits = 15;
constexpr int kClBits = 7;      // longest code-length code (RFC 1951 3.2.7)
constexpr int kMinRun = 3, kMaxRun = 258;

inline uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

inline void store64(unsigned char* p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  std::memcpy(p, &v, 8);
}

// 0x80 in every byte of v that is zero, 0 elsewhere (exact: no carry between bytes).
inline uint64_t zero_bytes(uint64_t v) {
  constexpr uint64_t k7f = 0x7F7F7F7F7F7F7F7FULL;
  return ~(((v & k7f) + k7f) | v | k7f);
}

// Index of the lowest non-zero byte of m != 0 (the first in memory order of a load64).
inline int first_byte(uint64_t m) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctzll(m) >> 3;
#else
  int k = 0;
  for (; !(m & 0xFF); m >>= 8) ++k;
  return k;
#endif
}

// Filter byte 1 then the Sub differences of every row: out has H * (W * C + 1) bytes.
void sub_filter(const PngArgs& a, unsigned char* out) {
  const int64_t row = a.W * a.C, C = a.C;
  for (int64_t y = 0; y < a.H; ++y) {
    const unsigned char* s = a.image + y * row;
    unsigned char* d = out + y * (row + 1);
    d[0] = 1;
    for (int64_t x = 0; x < C; ++x) d[1 + x] = s[x];
    for (int64_t x = C; x < row; ++x) d[1 + x] = static_cast<unsigned char>(s[x] - s[x - C]);
  }
}

// Adler-32 (RFC 1950) in blocks of at most 5552 bytes, the most before the sums must be reduced
// modulo 65521. The byte i of a block of m bytes adds b_i to s1 and (m - i) b_i to s2.
// SSE2 (the x86-64 baseline): per 16 bytes, one psadbw sums them and two pmaddwd weigh them by
// 16 .. 1; the sums of the previous groups are added 16 times over (4x faster than the lanes
// below, which the compiler does not vectorise; 0.15 -> 0.04 ms at 640 x 480).
// Elsewhere: 16 lanes, b the bytes and c the running sums of b, so that byte i = 16 g + k adds
// 16 c_k - k b_k in all.
uint32_t adler32(const unsigned char* p, int64_t n) {
  constexpr uint32_t kMod = 65521;
  constexpr int64_t kBlock = 5552;   // 16 * 347
  uint64_t s1 = 1, s2 = 0;
  while (n >= 16) {
    const int64_t m = std::min<int64_t>(n, kBlock) & ~int64_t(15);
    uint64_t sb = 0, sc = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    const __m128i w_lo = _mm_setr_epi16(16, 15, 14, 13, 12, 11, 10, 9), w_hi = _mm_setr_epi16(8, 7, 6, 5, 4, 3, 2, 1);
    __m128i vb = zero, vw = zero, vprev = zero;   // byte sums, weighted sums, sums of earlier groups
    for (int64_t g = 0; g < m; g += 16) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + g));
      vprev = _mm_add_epi32(vprev, vb);
      vb = _mm_add_epi32(vb, _mm_sad_epu8(x, zero));
      vw = _mm_add_epi32(vw, _mm_madd_epi16(_mm_unpacklo_epi8(x, zero), w_lo));
      vw = _mm_add_epi32(vw, _mm_madd_epi16(_mm_unpackhi_epi8(x, zero), w_hi));
    }
    uint32_t b[4], w[4], prev[4];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(b), vb);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(w), vw);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(prev), vprev);
    sb = uint64_t(b[0]) + b[2];                   // psadbw: one sum per 64-bit half
    sc = uint64_t(w[0]) + w[1] + w[2] + w[3] + 16 * (uint64_t(prev[0]) + prev[2]);
#else
    uint32_t b[16] = {0}, c[16] = {0};
    for (int64_t g = 0; g < m; g += 16) {
      for (int k = 0; k < 16; ++k) {
        b[k] += p[g + k];
        c[k] += b[k];
      }
    }
    for (int k = 0; k < 16; ++k) {
      sb += b[k];
      sc += 16 * uint64_t(c[k]) - uint64_t(k) * b[k];
    }
#endif
    s2 = (s2 + uint64_t(m) * s1 + sc) % kMod;
    s1 = (s1 + sb) % kMod;
    p += m;
    n -= m;
  }
  for (int64_t i = 0; i < n; ++i) {
    s1 += p[i];
    s2 += s1;
  }
  return static_cast<uint32_t>(((s2 % kMod) << 16) | (s1 % kMod));
}

// A span of literals followed by a run (distance 1) of `run` bytes; run 0: the last span.
struct Token {
  int64_t lits;
  int32_t run;
};

// Greedy runs, as zlib's deflate_rle: at each position i >= 1, a match if bytes i, i + 1, i + 2
// equal byte i - 1, as long as it lasts (at most 258). Candidates are found 8 positions at a time:
// position j starts one when bytes j, j + 1, j + 2 each equal byte j - 1.
void find_runs(const unsigned char* p, int64_t n, std::vector<Token>& toks) {
  int64_t lit0 = 0, i = 1;
  while (true) {
    int64_t j = -1;
    for (; i + 10 <= n; i += 8) {
      const uint64_t prev = load64(p + i - 1);
      const uint64_t m = zero_bytes((load64(p + i) ^ prev) | (load64(p + i + 1) ^ prev) | (load64(p + i + 2) ^ prev));
      if (m) {
        j = i + first_byte(m);
        break;
      }
    }
    if (j < 0) {
      for (; i + kMinRun <= n; ++i)
        if (p[i] == p[i - 1] && p[i + 1] == p[i - 1] && p[i + 2] == p[i - 1]) {
          j = i;
          break;
        }
      if (j < 0) break;
    }
    const unsigned char v = p[j - 1];
    const int64_t end = std::min<int64_t>(n, j + kMaxRun);
    int64_t e = j + kMinRun;
    const uint64_t vv = 0x0101010101010101ULL * v;
    while (e + 8 <= end) {
      const uint64_t m = load64(p + e) ^ vv;
      if (m) {
        e += first_byte(m);   // p[e] != v: the loop below stops at once
        break;
      }
      e += 8;
    }
    while (e < end && p[e] == v) ++e;
    toks.push_back(Token{j - lit0, static_cast<int32_t>(e - j)});
    i = lit0 = e;
  }
  toks.push_back(Token{n - lit0, 0});
}

// Code lengths of at most max_len bits for the n symbols of freq (0: unused). Huffman's lengths
// (two queues over the sorted leaves), then, if some are too long, the longest codes are cut to
// max_len and the Kraft sum brought back to 1 by lengthening shorter codes (as miniz does); the
// most frequent symbols get the shortest codes. At least two symbols get a length (zlib does the
// same), so that every code is complete.
void huffman_lengths(const uint32_t* freq, int n, int max_len, unsigned char* len) {
  constexpr int kMax = 286;
  uint64_t key[kMax];   // frequency << 16 | symbol: one integer to sort
  int m = 0;
  for (int s = 0; s < n; ++s)
    if (freq[s]) key[m++] = (uint64_t(freq[s]) << 16) | s;
  for (int s = 0; s < n && m < 2; ++s)
    if (!freq[s]) key[m++] = s;
  std::sort(key, key + m);
  uint64_t w[2 * kMax];
  int parent[2 * kMax], depth[2 * kMax];
  for (int k = 0; k < m; ++k) w[k] = key[k] >> 16;
  int li = 0, ii = m;
  for (int next = m; next < 2 * m - 1; ++next) {
    int pick[2];
    for (int t = 0; t < 2; ++t) pick[t] = (li < m && (ii >= next || w[li] <= w[ii])) ? li++ : ii++;
    w[next] = w[pick[0]] + w[pick[1]];
    parent[pick[0]] = parent[pick[1]] = next;
  }
  depth[2 * m - 2] = 0;
  for (int k = 2 * m - 3; k >= 0; --k) depth[k] = depth[parent[k]] + 1;
  int64_t count[16] = {0};
  for (int k = 0; k < m; ++k) ++count[std::min(depth[k], max_len)];
  uint64_t total = 0;
  for (int l = 1; l <= max_len; ++l) total += uint64_t(count[l]) << (max_len - l);
  while (total > (uint64_t(1) << max_len)) {
    --count[max_len];
    for (int l = max_len - 1; l > 0; --l)
      if (count[l]) {
        --count[l];
        count[l + 1] += 2;
        break;
      }
    --total;
  }
  std::memset(len, 0, n);
  int k = m - 1;
  for (int l = 1; l <= max_len; ++l)
    for (int64_t c = 0; c < count[l]; ++c) len[key[k--] & 0xFFFF] = static_cast<unsigned char>(l);
}

// Canonical codes (RFC 1951 3.2.2) of the lengths, bit-reversed for LSB-first output.
void canonical_codes(const unsigned char* len, int n, uint32_t* code) {
  int count[16] = {0}, next[16] = {0};
  for (int s = 0; s < n; ++s) ++count[len[s]];
  count[0] = 0;
  for (int l = 1, c = 0; l < 16; ++l) {
    c = (c + count[l - 1]) << 1;
    next[l] = c;
  }
  for (int s = 0; s < n; ++s) {
    const int l = len[s];
    if (!l) continue;
    uint32_t c = next[l]++, r = 0;
    for (int b = 0; b < l; ++b) r |= ((c >> b) & 1) << (l - 1 - b);
    code[s] = r;
  }
}

// Length code (257 .. 285), its number of extra bits and their value, for every run length.
struct LenCode {
  uint16_t sym, extra_bits, extra;
};

const LenCode* len_codes() {
  static const std::vector<LenCode> table = [] {
    static const int base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const int bits[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    std::vector<LenCode> t(kMaxRun + 1, LenCode{0, 0, 0});
    for (int c = 0; c < 28; ++c)
      for (int l = base[c]; l < base[c] + (1 << bits[c]) && l < kMaxRun; ++l)
        t[l] = LenCode{static_cast<uint16_t>(257 + c), static_cast<uint16_t>(bits[c]),
                       static_cast<uint16_t>(l - base[c])};
    t[kMaxRun] = LenCode{285, 0, 0};   // 258 has its own code (284 + 31 extra is not used)
    return t;
  }();
  return table.data();
}

// LSB-first bit writer. flush() stores all 8 bytes of the buffer (the output needs 8 bytes of slack)
// and keeps fewer than 8 bits: up to 56 bits may be put between two flushes.
struct Bits {
  unsigned char* p;
  uint64_t buf = 0;
  int n = 0;
  void put(uint64_t v, int len) {
    buf |= v << n;
    n += len;
  }
  void flush() {
    store64(p, buf);
    p += n >> 3;
    buf >>= n & 56;
    n &= 7;
  }
  void align() {
    flush();
    if (n) {
      *p++ = static_cast<unsigned char>(buf);
      buf = 0;
      n = 0;
    }
  }
};

// One code-length operation: symbol 0 .. 18 and its extra bits.
struct ClOp {
  unsigned char sym, extra_bits, extra;
};

// Run-length coding of code lengths (RFC 1951 3.2.7): 16 repeats the previous length 3 .. 6 times,
// 17 and 18 give 3 .. 10 and 11 .. 138 zeros.
void code_length_ops(const unsigned char* len, int n, std::vector<ClOp>& ops) {
  for (int i = 0; i < n;) {
    const unsigned char v = len[i];
    int run = 1;
    while (i + run < n && len[i + run] == v) ++run;
    i += run;
    if (v == 0) {
      while (run >= 11) {
        const int r = std::min(run, 138);
        ops.push_back(ClOp{18, 7, static_cast<unsigned char>(r - 11)});
        run -= r;
      }
      if (run >= 3) {
        ops.push_back(ClOp{17, 3, static_cast<unsigned char>(run - 3)});
        run = 0;
      }
      for (; run > 0; --run) ops.push_back(ClOp{0, 0, 0});
    } else {
      ops.push_back(ClOp{v, 0, 0});
      --run;
      while (run >= 3) {
        const int r = std::min(run, 6);
        ops.push_back(ClOp{16, 2, static_cast<unsigned char>(r - 3)});
        run -= r;
      }
      for (; run > 0; --run) ops.push_back(ClOp{v, 0, 0});
    }
  }
}

// The symbols of the filtered bytes p, as the tokens split them, and no end-of-block code.
Bits write_data(Bits w, const unsigned char* p, const std::vector<Token>& toks, const uint32_t* lcode,
                const unsigned char* llen, const uint64_t* run_code, const int* run_bits) {
  // separate tables of codes and lengths: two loads cost less than unpacking one entry (-20 %)
  uint64_t lit_code[256];
  unsigned char lit_len[256];
  for (int s = 0; s < 256; ++s) {
    lit_code[s] = lcode[s];
    lit_len[s] = llen[s];
  }
  const unsigned char* q = p;
  for (const Token& t : toks) {
    const unsigned char* end = q + t.lits;
    for (; q + 4 <= end; q += 4) {
      w.put(lit_code[q[0]], lit_len[q[0]]);
      w.put(lit_code[q[1]], lit_len[q[1]]);
      w.put(lit_code[q[2]], lit_len[q[2]]);
      w.put(lit_code[q[3]], lit_len[q[3]]);
      w.flush();
    }
    for (; q < end; ++q) {
      w.put(lit_code[*q], lit_len[*q]);
      w.flush();
    }
    if (t.run) {
      w.put(run_code[t.run], run_bits[t.run]);
      w.flush();
      q += t.run;
    }
  }
  return w;
}

void put_be32(unsigned char* p, uint32_t v) {
  p[0] = static_cast<unsigned char>(v >> 24);
  p[1] = static_cast<unsigned char>(v >> 16);
  p[2] = static_cast<unsigned char>(v >> 8);
  p[3] = static_cast<unsigned char>(v);
}

}  // namespace

std::string png_idat_cpu(const PngArgs& a) {
  check_png_args(a);
  const int64_t n = a.H * (a.W * a.C + 1);
  std::unique_ptr<unsigned char[]> raw(new unsigned char[n]);
  sub_filter(a, raw.get());
  const unsigned char* p = raw.get();
  const uint32_t adler = adler32(p, n);

  // pass 1: runs and symbol counts. Literals are counted over all bytes, four tables against
  // store-to-load stalls on repeated bytes, then each run's bytes are taken off.
  std::vector<Token> toks;
  find_runs(p, n, toks);
  uint32_t hist[4][256] = {{0}};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++hist[0][p[i]];
    ++hist[1][p[i + 1]];
    ++hist[2][p[i + 2]];
    ++hist[3][p[i + 3]];
  }
  for (; i < n; ++i) ++hist[0][p[i]];
  uint32_t lfreq[286] = {0}, dfreq[30] = {0};   // n < 2^32 (check_png_args)
  for (int s = 0; s < 256; ++s) lfreq[s] = hist[0][s] + hist[1][s] + hist[2][s] + hist[3][s];
  lfreq[256] = 1;   // end of block
  const LenCode* lc = len_codes();
  int64_t pos = 0;
  for (const Token& t : toks) {
    pos += t.lits;
    if (t.run) {
      lfreq[p[pos - 1]] -= t.run;
      ++lfreq[lc[t.run].sym];
      ++dfreq[0];   // distance 1
      pos += t.run;
    }
  }
  unsigned char llen[286], dlen[30];
  huffman_lengths(lfreq, 286, kLitBits, llen);
  huffman_lengths(dfreq, 30, kDistBits, dlen);
  int hlit = 286, hdist = 30;
  while (hlit > 257 && !llen[hlit - 1]) --hlit;
  while (hdist > 1 && !dlen[hdist - 1]) --hdist;
  std::vector<ClOp> ops;
  ops.reserve(hlit + hdist);
  code_length_ops(llen, hlit, ops);
  code_length_ops(dlen, hdist, ops);
  uint32_t cf[19] = {0};
  for (const ClOp& o : ops) ++cf[o.sym];
  unsigned char clen[19];
  huffman_lengths(cf, 19, kClBits, clen);
  static const int kClOrder[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
  int hclen = 19;
  while (hclen > 4 && !clen[kClOrder[hclen - 1]]) --hclen;

  // exact size of the dynamic block, to choose between it and stored blocks
  uint64_t bits = 3 + 5 + 5 + 4 + 3 * uint64_t(hclen);
  for (const ClOp& o : ops) bits += clen[o.sym] + o.extra_bits;
  for (int s = 0; s < 286; ++s) bits += uint64_t(lfreq[s]) * llen[s];
  for (const Token& t : toks)
    if (t.run) bits += lc[t.run].extra_bits + dlen[0];
  const int64_t stored = n + 5 * ((n + 65534) / 65535);
  const bool dynamic = int64_t((bits + 7) / 8) < stored;
  const int64_t body = dynamic ? int64_t((bits + 7) / 8) : stored;

  std::string out(static_cast<size_t>(2 + body + 4 + 8), '\0');
  unsigned char* o = reinterpret_cast<unsigned char*>(&out[0]);
  o[0] = 0x78;   // deflate, 32 KB window
  o[1] = 0x01;   // fastest compression; (0x78 << 8 | 0x01) % 31 == 0
  if (!dynamic) {
    unsigned char* q = o + 2;
    for (int64_t s = 0; s < n; s += 65535) {
      const int64_t k = std::min<int64_t>(65535, n - s);
      const uint16_t len = static_cast<uint16_t>(k), nlen = static_cast<uint16_t>(~len);
      q[0] = s + k == n ? 1 : 0;   // BFINAL on the last, BTYPE 00, then byte-aligned LEN, NLEN
      q[1] = static_cast<unsigned char>(len);
      q[2] = static_cast<unsigned char>(len >> 8);
      q[3] = static_cast<unsigned char>(nlen);
      q[4] = static_cast<unsigned char>(nlen >> 8);
      std::memcpy(q + 5, p + s, k);
      q += 5 + k;
    }
    put_be32(q, adler);
    out.resize(static_cast<size_t>(q + 4 - o));
    return out;
  }

  uint32_t lcode[286], dcode[30], ccode[19];
  canonical_codes(llen, 286, lcode);
  canonical_codes(dlen, 30, dcode);
  canonical_codes(clen, 19, ccode);
  Bits w{o + 2};
  w.put(1, 1);   // final block
  w.put(2, 2);   // dynamic Huffman codes
  w.put(hlit - 257, 5);
  w.put(hdist - 1, 5);
  w.put(hclen - 4, 4);
  w.flush();
  for (int k = 0; k < hclen; ++k) {
    w.put(clen[kClOrder[k]], 3);
    w.flush();
  }
  for (const ClOp& c : ops) {
    w.put(ccode[c.sym], clen[c.sym]);
    w.put(c.extra, c.extra_bits);
    w.flush();
  }
  // a whole run (length code, extra bits, distance code) in one put: at most 14 + 5 + 15 bits
  uint64_t run_code[kMaxRun + 1];
  int run_bits[kMaxRun + 1];
  for (int l = kMinRun; l <= kMaxRun; ++l) {
    const LenCode& c = lc[l];
    run_code[l] = lcode[c.sym] | (uint64_t(c.extra) << llen[c.sym]) |
                  (uint64_t(dcode[0]) << (llen[c.sym] + c.extra_bits));
    run_bits[l] = llen[c.sym] + c.extra_bits + dlen[0];
  }
  w = write_data(w, p, toks, lcode, llen, run_code, run_bits);
  w.put(lcode[256], llen[256]);
  w.align();
  if (w.p != o + 2 + body) throw std::logic_error("daam_fast._C: png_idat_cpu wrote a block of the wrong size");
  put_be32(w.p, adler);
  out.resize(static_cast<size_t>(w.p + 4 - o));
  return out;
}

}  // namespace daam
