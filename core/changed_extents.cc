#include "core/changed_extents.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#define CBT_SCAN_X86 1
#else
#define CBT_SCAN_X86 0
#endif

namespace cbt {
namespace {

// How the scanners work.
//
// An instruction-set policy provides, for 64 bytes at `p`, the mask whose bit i is set when
// byte i is greater than `since` (Mask64), and two quick tests over 256 bytes used to skip long
// stretches: nothing above (NoneAbove256) and everything above (AllAbove256).
//
// FindChangedExtents walks the map 64 blocks at a time. With m the mask of a chunk and c the
// "above" bit of the block before it, t = m ^ (m << 1 | c) has a bit at every block where a run
// of changed blocks starts or ends; they alternate, so one ctz per boundary walks them with a
// well-predicted branch. Chunks without boundaries lead into the 256-byte skips. Every policy is
// exact (no approximate filtering), so all of them give the same result.
//
// The policies are instantiated inside wrappers that carry the matching target attribute and
// `flatten`, so the AVX2 code is only ever reached after a CPU check. (An AVX-512BW variant was
// measured too: on the AMD EPYC of docs/BENCHMARKS.md it was no faster than AVX2, and slower on
// dense maps, so it is not carried.)

constexpr size_t kChunk = 64;
constexpr size_t kGroup = 256;

// ---------------------------------------------------------------------------------------------
// Policies

struct ScalarIsa {
  struct Key {
    uint8_t since;
  };
  static Key Splat(uint8_t since) { return {since}; }
  static uint64_t Mask64(const uint8_t* p, Key k) {
    uint64_t m = 0;
    for (size_t i = 0; i < kChunk; ++i) m |= uint64_t{p[i] > k.since} << i;
    return m;
  }
  static bool NoneAbove256(const uint8_t* p, Key k) {
    uint8_t max = 0;
    for (size_t i = 0; i < kGroup; ++i) max = std::max(max, p[i]);
    return max <= k.since;
  }
  static bool AllAbove256(const uint8_t* p, Key k) {
    uint8_t min = 255;
    for (size_t i = 0; i < kGroup; ++i) min = std::min(min, p[i]);
    return min > k.since;
  }
};

#if CBT_SCAN_X86
struct Sse2Isa {
  struct Key {
    __m128i since;
  };
  static Key Splat(uint8_t since) { return {_mm_set1_epi8(static_cast<char>(since))}; }
  // Bit i set when byte i is NOT above: saturating v - since is zero.
  static uint32_t NotAbove16(__m128i v, Key k) {
    return static_cast<uint32_t>(
        _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_subs_epu8(v, k.since), _mm_setzero_si128())));
  }
  static __m128i Load(const uint8_t* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  }
  static uint64_t Mask64(const uint8_t* p, Key k) {
    const uint64_t not_above = uint64_t{NotAbove16(Load(p), k)} |
                               uint64_t{NotAbove16(Load(p + 16), k)} << 16 |
                               uint64_t{NotAbove16(Load(p + 32), k)} << 32 |
                               uint64_t{NotAbove16(Load(p + 48), k)} << 48;
    return ~not_above;
  }
  static bool NoneAbove256(const uint8_t* p, Key k) {
    __m128i max = Load(p);
    for (size_t i = 16; i < kGroup; i += 16) max = _mm_max_epu8(max, Load(p + i));
    return NotAbove16(max, k) == 0xFFFF;
  }
  static bool AllAbove256(const uint8_t* p, Key k) {
    __m128i min = Load(p);
    for (size_t i = 16; i < kGroup; i += 16) min = _mm_min_epu8(min, Load(p + i));
    return NotAbove16(min, k) == 0;
  }
};

#define CBT_AVX2 __attribute__((target("avx2")))
struct Avx2Isa {
  struct Key {
    __m256i since;
  };
  CBT_AVX2 static Key Splat(uint8_t since) {
    return {_mm256_set1_epi8(static_cast<char>(since))};
  }
  CBT_AVX2 static __m256i Load(const uint8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  // Bit i set when byte i is NOT above: max(v, since) == since.
  CBT_AVX2 static uint32_t NotAbove32(__m256i v, Key k) {
    return static_cast<uint32_t>(
        _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_max_epu8(v, k.since), k.since)));
  }
  CBT_AVX2 static uint64_t Mask64(const uint8_t* p, Key k) {
    return ~(uint64_t{NotAbove32(Load(p), k)} | uint64_t{NotAbove32(Load(p + 32), k)} << 32);
  }
  CBT_AVX2 static bool NoneAbove256(const uint8_t* p, Key k) {
    const __m256i a = _mm256_max_epu8(_mm256_max_epu8(Load(p), Load(p + 32)),
                                      _mm256_max_epu8(Load(p + 64), Load(p + 96)));
    const __m256i b = _mm256_max_epu8(_mm256_max_epu8(Load(p + 128), Load(p + 160)),
                                      _mm256_max_epu8(Load(p + 192), Load(p + 224)));
    return NotAbove32(_mm256_max_epu8(a, b), k) == 0xFFFFFFFFu;
  }
  CBT_AVX2 static bool AllAbove256(const uint8_t* p, Key k) {
    const __m256i a = _mm256_min_epu8(_mm256_min_epu8(Load(p), Load(p + 32)),
                                      _mm256_min_epu8(Load(p + 64), Load(p + 96)));
    const __m256i b = _mm256_min_epu8(_mm256_min_epu8(Load(p + 128), Load(p + 160)),
                                      _mm256_min_epu8(Load(p + 192), Load(p + 224)));
    return NotAbove32(_mm256_min_epu8(a, b), k) == 0;
  }
};

#endif  // CBT_SCAN_X86

// ---------------------------------------------------------------------------------------------
// Kernels, generic over the policy

template <class Isa>
inline size_t FindFirstImpl(const uint8_t* data, size_t n, size_t from, uint8_t since,
                            bool want_above) {
  if (from >= n) return n;
  // Nothing is above 255, everything is "not above" it.
  if (since == 255) return want_above ? n : from;
  const typename Isa::Key k = Isa::Splat(since);
  size_t i = from;
  while (true) {
    if (want_above) {
      while (i + kGroup <= n && Isa::NoneAbove256(data + i, k)) i += kGroup;
    } else {
      while (i + kGroup <= n && Isa::AllAbove256(data + i, k)) i += kGroup;
    }
    if (i + kChunk > n) break;
    // Up to four chunks: the group that stopped the skip holds the answer.
    for (int c = 0; c < 4 && i + kChunk <= n; ++c, i += kChunk) {
      const uint64_t above = Isa::Mask64(data + i, k);
      const uint64_t m = want_above ? above : ~above;
      if (m != 0) return i + static_cast<size_t>(std::countr_zero(m));
    }
  }
  for (; i < n; ++i) {
    if ((data[i] > since) == want_above) return i;
  }
  return n;
}

template <class Isa>
inline ChangedExtentsPage FindChangedExtentsImpl(std::span<const uint8_t> map,
                                                 const TrackingGeometry& geometry, uint8_t since,
                                                 uint64_t start_offset, size_t max_extents) {
  ChangedExtentsPage page;
  const uint64_t capacity = geometry.capacity_bytes();
  const uint32_t shift = geometry.block_shift;
  const size_t blocks = std::min<size_t>(map.size(), geometry.block_count);
  page.next_offset = capacity;
  page.complete = true;
  if (start_offset >= capacity || since == 255) return page;
  const size_t first = static_cast<size_t>(start_offset >> shift);
  if (first >= blocks) return page;

  const uint8_t* const data = map.data();
  bool in_run = false;
  size_t run_start = 0;
  // Opens a run at `block`; false when the page is already full (the run is the next page's).
  auto open = [&](size_t block) {
    if (max_extents != 0 && page.extents.size() == max_extents) [[unlikely]] {
      page.next_offset = std::max<uint64_t>(uint64_t{block} << shift, start_offset);
      page.complete = false;
      return false;
    }
    run_start = block;
    in_run = true;
    return true;
  };
  // Closes the open run before block `end` (the map's end clips to the capacity).
  auto close = [&](size_t end) {
    const uint64_t begin = std::max<uint64_t>(uint64_t{run_start} << shift, start_offset);
    const uint64_t stop = end >= blocks ? capacity : uint64_t{end} << shift;
    page.extents.push_back({begin, stop - begin});
    in_run = false;
  };

  const typename Isa::Key k = Isa::Splat(since);
  size_t base = first;
  bool quiet = true;  // the last chunk had no boundary: try to skip whole groups
  while (base + kChunk <= blocks) {
    if (quiet) {
      if (in_run) {
        while (base + kGroup <= blocks && Isa::AllAbove256(data + base, k)) base += kGroup;
      } else {
        while (base + kGroup <= blocks && Isa::NoneAbove256(data + base, k)) base += kGroup;
      }
      if (base + kChunk > blocks) break;
    }
    const uint64_t m = Isa::Mask64(data + base, k);
    uint64_t t = m ^ (m << 1 | uint64_t{in_run});
    quiet = t == 0;
    while (t != 0) {
      const size_t block = base + static_cast<size_t>(std::countr_zero(t));
      t &= t - 1;
      if (!in_run) {
        if (!open(block)) return page;
      } else {
        close(block);
      }
    }
    base += kChunk;
  }
  for (; base < blocks; ++base) {
    const bool above = data[base] > since;
    if (above == in_run) continue;
    if (above) {
      if (!open(base)) return page;
    } else {
      close(base);
    }
  }
  if (in_run) close(blocks);
  return page;
}

// ---------------------------------------------------------------------------------------------
// Dispatch

struct Impl {
  ScanIsa isa;
  size_t (*find_first)(const uint8_t*, size_t, size_t, uint8_t, bool);
  ChangedExtentsPage (*find_extents)(std::span<const uint8_t>, const TrackingGeometry&, uint8_t,
                                     uint64_t, size_t);
};

#define CBT_DEFINE_IMPL(NAME, ISA, ATTRS)                                                      \
  ATTRS __attribute__((flatten)) size_t NAME##FindFirst(const uint8_t* data, size_t n,         \
                                                        size_t from, uint8_t since,           \
                                                        bool want_above) {                    \
    return FindFirstImpl<ISA>(data, n, from, since, want_above);                               \
  }                                                                                            \
  ATTRS __attribute__((flatten)) ChangedExtentsPage NAME##FindExtents(                         \
      std::span<const uint8_t> map, const TrackingGeometry& geometry, uint8_t since,           \
      uint64_t start_offset, size_t max_extents) {                                             \
    return FindChangedExtentsImpl<ISA>(map, geometry, since, start_offset, max_extents);       \
  }

CBT_DEFINE_IMPL(Scalar, ScalarIsa, )
constexpr Impl kScalarImpl{ScanIsa::kScalar, &ScalarFindFirst, &ScalarFindExtents};
#if CBT_SCAN_X86
CBT_DEFINE_IMPL(Sse2, Sse2Isa, )
CBT_DEFINE_IMPL(Avx2, Avx2Isa, CBT_AVX2)
constexpr Impl kSse2Impl{ScanIsa::kSse2, &Sse2FindFirst, &Sse2FindExtents};
constexpr Impl kAvx2Impl{ScanIsa::kAvx2, &Avx2FindFirst, &Avx2FindExtents};
#endif

const Impl* ImplFor(ScanIsa isa) {
  switch (isa) {
    case ScanIsa::kScalar:
      return &kScalarImpl;
#if CBT_SCAN_X86
    case ScanIsa::kSse2:
      return &kSse2Impl;
    case ScanIsa::kAvx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") ? &kAvx2Impl : nullptr;
#endif
    default:
      return nullptr;
  }
}

const Impl* BestImpl() {
  for (ScanIsa isa : {ScanIsa::kAvx2, ScanIsa::kSse2}) {
    if (const Impl* impl = ImplFor(isa)) return impl;
  }
  return &kScalarImpl;
}

std::atomic<const Impl*> g_impl{nullptr};

const Impl& Active() {
  const Impl* impl = g_impl.load(std::memory_order_acquire);
  if (impl == nullptr) [[unlikely]] {
    impl = BestImpl();
    g_impl.store(impl, std::memory_order_release);
  }
  return *impl;
}

}  // namespace

size_t FindFirstAbove(std::span<const uint8_t> map, size_t from, uint8_t since) {
  return Active().find_first(map.data(), map.size(), from, since, true);
}

size_t FindFirstNotAbove(std::span<const uint8_t> map, size_t from, uint8_t since) {
  return Active().find_first(map.data(), map.size(), from, since, false);
}

ChangedExtentsPage FindChangedExtents(std::span<const uint8_t> map, const TrackingGeometry& geometry,
                                      uint8_t since, uint64_t start_offset, size_t max_extents) {
  return Active().find_extents(map, geometry, since, start_offset, max_extents);
}

ScanIsa ActiveScanIsa() { return Active().isa; }

const char* ScanIsaName(ScanIsa isa) {
  switch (isa) {
    case ScanIsa::kScalar:
      return "scalar";
    case ScanIsa::kSse2:
      return "sse2";
    case ScanIsa::kAvx2:
      return "avx2";
  }
  return "unknown";
}

bool SetScanIsaForTesting(ScanIsa isa) {
  const Impl* impl = ImplFor(isa);
  if (impl == nullptr) return false;
  g_impl.store(impl, std::memory_order_release);
  return true;
}

}  // namespace cbt
