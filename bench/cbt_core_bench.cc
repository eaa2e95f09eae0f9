// Benchmarks of the CBT hot paths: Set() on the I/O path, Switch() at snapshot take, and the
// changed-extents scan an incremental backup runs, next to a memcpy of the same 2 MiB map.
//
// The map is the largest a device gets at the default parameters: 2,097,152 blocks (a 128 GiB
// device with 64 KiB blocks; also any device from 128 GiB to 128 TiB at its own block size).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/cbt_map.h"
#include "core/changed_extents.h"

namespace cbt {
namespace {

constexpr uint64_t kBlocks = 2'097'152;
constexpr uint64_t kSpb = 128;                     // sectors per 64 KiB block
constexpr uint64_t kCapacity = kBlocks * kSpb;     // 128 GiB in sectors
constexpr uint64_t kMapBytes = kBlocks;            // one byte per block

std::unique_ptr<CbtMap> NewMap() {
  auto map = CbtMap::Create(kCapacity);
  if (!map.ok() || (*map)->Info().block_count != kBlocks) std::abort();
  return std::move(*map);
}

// ---------------------------------------------------------------------------------------------
// Set

// Sequential 4 KiB writes: 16 per 64 KiB block, so mostly already-marked blocks (the steady
// state between two snapshots), with a first mark every 16th call.
void BM_Set_4KiB_Sequential(benchmark::State& state) {
  auto map = NewMap();
  uint64_t sector = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(map->Set(sector, 8));
    sector += 8;
    if (sector >= kCapacity) sector = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Set_4KiB_Sequential);

// Random 4 KiB writes over the whole device (the map is 2 MiB: mostly cache misses in L1/L2).
void BM_Set_4KiB_Random(benchmark::State& state) {
  auto map = NewMap();
  std::mt19937_64 rng(1);
  std::vector<uint64_t> sectors(1 << 16);
  for (auto& s : sectors) s = (rng() % (kCapacity / 8)) * 8;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(map->Set(sectors[i], 8));
    i = (i + 1) & (sectors.size() - 1);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Set_4KiB_Random);

// After every Switch() the numbers go up, so each block written is marked anew: the worst case
// of one store per call. Measured by switching every 4096 calls (switch time excluded).
void BM_Set_4KiB_FreshMarks(benchmark::State& state) {
  auto map = NewMap();
  uint64_t sector = 0;
  int since_switch = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(map->Set(sector, 8));
    sector += kSpb;  // next block each time
    if (sector >= kCapacity) sector = 0;
    if (++since_switch == 4096) {
      state.PauseTiming();
      map->Switch();
      since_switch = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Set_4KiB_FreshMarks);

// 1 MiB writes: 16 blocks each.
void BM_Set_1MiB(benchmark::State& state) {
  auto map = NewMap();
  uint64_t sector = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(map->Set(sector, 2048));
    sector += 2048;
    if (sector >= kCapacity) sector = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Set_1MiB);

// Several I/O threads marking one map at once (each in its own part of the device), the way the
// agent's writers do. Reported per call and per thread.
void BM_Set_4KiB_Threads(benchmark::State& state) {
  static std::once_flag once;
  static std::unique_ptr<CbtMap> shared;
  std::call_once(once, [] { shared = NewMap(); });
  const uint64_t region = kCapacity / 4;
  const uint64_t base = static_cast<uint64_t>(state.thread_index()) * region;
  uint64_t offset = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(shared->Set(base + offset, 8));
    offset += 8;
    if (offset >= region) offset = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Set_4KiB_Threads)->Threads(1)->Threads(2)->UseRealTime();

// Both threads writing the same few blocks: the same bytes bounce between the CPUs' caches.
void BM_Set_4KiB_Threads_SameBlocks(benchmark::State& state) {
  static std::once_flag once;
  static std::unique_ptr<CbtMap> shared;
  std::call_once(once, [] { shared = NewMap(); });
  uint64_t offset = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(shared->Set(offset, 8));
    offset = (offset + 8) & (4 * kSpb - 1);  // 4 blocks
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Set_4KiB_Threads_SameBlocks)->Threads(1)->Threads(2)->UseRealTime();

// ---------------------------------------------------------------------------------------------
// Switch and the memcpy baseline

void BM_Switch(benchmark::State& state) {
  auto map = NewMap();
  for (uint64_t s = 0; s < kCapacity; s += 7 * kSpb) (void)map->Set(s, 1);
  for (auto _ : state) map->Switch();  // every 255th is the wrap (a memset instead of a copy)
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kMapBytes));
}
BENCHMARK(BM_Switch);

void BM_Memcpy_2MiB(benchmark::State& state) {
  std::vector<uint8_t> from(kMapBytes, 1), to(kMapBytes, 0);
  for (auto _ : state) {
    std::memcpy(to.data(), from.data(), kMapBytes);
    benchmark::DoNotOptimize(to.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kMapBytes));
}
BENCHMARK(BM_Memcpy_2MiB);

// ---------------------------------------------------------------------------------------------
// Changed extents

enum Placement : int64_t { kUniform = 0, kClustered = 1 };

// A read map in which `per_mille_x10` / 10000 of the blocks hold 2 (changed since 1) and the rest
// 0 or 1. Uniform: blocks chosen independently; clustered: runs of 16..256 blocks.
const std::vector<uint8_t>& TestMap(Placement placement, int64_t per_10000) {
  static std::mutex mu;
  static std::map<std::pair<int64_t, int64_t>, std::vector<uint8_t>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& map = cache[{placement, per_10000}];
  if (!map.empty()) return map;
  std::mt19937_64 rng(static_cast<uint64_t>(placement * 100000 + per_10000));
  map.resize(kBlocks);
  for (auto& b : map) b = static_cast<uint8_t>(rng() & 1);  // unchanged: 0 or 1
  const uint64_t target = kBlocks * static_cast<uint64_t>(per_10000) / 10000;
  if (target == kBlocks) {
    std::fill(map.begin(), map.end(), 2);
  } else if (placement == kUniform) {
    // Exactly `target` distinct blocks (a partial Fisher-Yates shuffle).
    std::vector<uint32_t> index(kBlocks);
    for (uint32_t i = 0; i < kBlocks; ++i) index[i] = i;
    for (uint64_t i = 0; i < target; ++i) {
      std::swap(index[i], index[i + rng() % (kBlocks - i)]);
      map[index[i]] = 2;
    }
  } else {
    uint64_t changed = 0;
    while (changed < target) {
      const uint64_t length = std::min<uint64_t>(16 + rng() % 241, target - changed);
      const uint64_t start = rng() % (kBlocks - length);
      for (uint64_t b = start; b < start + length; ++b) {
        if (map[b] != 2) {
          map[b] = 2;
          ++changed;
        }
      }
    }
  }
  return map;
}

TrackingGeometry Geometry() {
  auto geometry = ChooseTrackingGeometry(kCapacity);
  if (!geometry.ok()) std::abort();
  return *geometry;
}

// args: placement, changed blocks per 10,000.
void BM_ChangedExtents(benchmark::State& state) {
  const auto placement = static_cast<Placement>(state.range(0));
  const std::vector<uint8_t>& map = TestMap(placement, state.range(1));
  const TrackingGeometry geometry = Geometry();
  size_t extents = 0;
  for (auto _ : state) {
    ChangedExtentsPage page = FindChangedExtents(map, geometry, 1, 0, 0);
    extents = page.extents.size();
    benchmark::DoNotOptimize(page.extents.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kMapBytes));
  state.counters["extents"] = static_cast<double>(extents);
  state.SetLabel(std::string(placement == kUniform ? "uniform " : "clustered ") +
                 std::to_string(state.range(1) / 100.0).substr(0, 4) + "%");
}
BENCHMARK(BM_ChangedExtents)
    ->ArgNames({"clustered", "per10000"})
    ->Args({kUniform, 0})
    ->Args({kUniform, 10})
    ->Args({kClustered, 10})
    ->Args({kUniform, 1000})
    ->Args({kClustered, 1000})
    ->Args({kUniform, 10000})
    ->Args({kClustered, 10000});

// The same scans with each implementation of the scanner this CPU can run (SSE2 is the x86-64
// baseline). args: isa, placement, changed blocks per 10,000.
void BM_ChangedExtentsByIsa(benchmark::State& state) {
  const auto isa = static_cast<ScanIsa>(state.range(0));
  const ScanIsa best = ActiveScanIsa();
  if (!SetScanIsaForTesting(isa)) {
    state.SkipWithError("not supported by this CPU");
    return;
  }
  const auto placement = static_cast<Placement>(state.range(1));
  const std::vector<uint8_t>& map = TestMap(placement, state.range(2));
  const TrackingGeometry geometry = Geometry();
  for (auto _ : state) {
    ChangedExtentsPage page = FindChangedExtents(map, geometry, 1, 0, 0);
    benchmark::DoNotOptimize(page.extents.data());
  }
  SetScanIsaForTesting(best);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kMapBytes));
  state.SetLabel(std::string(ScanIsaName(isa)) + (placement == kUniform ? " uniform " : " clustered ") +
                 std::to_string(state.range(2) / 100.0).substr(0, 4) + "%");
}
BENCHMARK(BM_ChangedExtentsByIsa)
    ->ArgNames({"isa", "clustered", "per10000"})
    ->ArgsProduct({{static_cast<int64_t>(ScanIsa::kSse2), static_cast<int64_t>(ScanIsa::kAvx2)},
                   {kUniform},
                   {0, 1000}})
    ->Args({static_cast<int64_t>(ScanIsa::kSse2), kClustered, 1000})
    ->Args({static_cast<int64_t>(ScanIsa::kAvx2), kClustered, 1000});

// The same scan through CbtMap::ChangedExtents (mutex, validation), 0.1 % clustered.
void BM_CbtMap_ChangedExtents(benchmark::State& state) {
  CbtMapState s;
  s.geometry = Geometry();
  s.snap_number_previous = 2;
  s.snap_number_active = 3;
  s.generation_id = NewRandomUuid();
  s.read_map = TestMap(kClustered, state.range(0));
  s.write_map = s.read_map;
  auto map = CbtMap::FromState(std::move(s));
  if (!map.ok()) std::abort();
  const GenerationId generation = (*map)->Info().generation_id;
  size_t extents = 0;
  for (auto _ : state) {
    auto page = (*map)->ChangedExtents(generation, 1, 0, 0);
    extents = page->extents.size();
    benchmark::DoNotOptimize(page->extents.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kMapBytes));
  state.counters["extents"] = static_cast<double>(extents);
}
BENCHMARK(BM_CbtMap_ChangedExtents)->ArgName("per10000")->Arg(10)->Arg(1000);

// The raw scanner: nothing changed, so one FindFirstAbove call covers the whole map.
void BM_FindFirstAbove_2MiB(benchmark::State& state) {
  const std::vector<uint8_t> map(kBlocks, 1);
  for (auto _ : state) benchmark::DoNotOptimize(FindFirstAbove(map, 0, 1));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kMapBytes));
}
BENCHMARK(BM_FindFirstAbove_2MiB);

}  // namespace
}  // namespace cbt

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("scan_isa", cbt::ScanIsaName(cbt::ActiveScanIsa()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
