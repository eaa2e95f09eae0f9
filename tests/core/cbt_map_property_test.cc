// Randomized comparison of CbtMap with a deliberately simple reference model.
//
// The model is written from the documented semantics (core/cbt_map.h, core/changed_extents.h,
// blksnap's cbt_map.c), not from the implementation: plain byte vectors, 128-bit arithmetic for
// ranges, one loop per block. Thousands of seeded operation sequences run against both; every
// result, the Info() of every step and, now and then, the full exported state must agree.
//
// The generation id comes from getrandom(), so the model cannot predict it. It records the id the
// library reports and checks it changes exactly where it must (creation, Reset, the switch that
// wraps past 255) and nowhere else, and never comes back.
//
// Reproduce a failure with the seed it prints:
//   CBT_PROPERTY_SEED=<seed> build/tests/core/cbt_core_property_test
// Run more sequences: CBT_PROPERTY_SEQUENCES=<n per shard> (default 2500, 4 shards).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/cbt_map.h"
#include "gtest/gtest.h"

namespace cbt {
namespace {

using absl::StatusCode;
using u128 = unsigned __int128;

// ---------------------------------------------------------------------------------------------
// The reference model

struct ModelGeometry {
  uint64_t capacity_sectors = 0;
  uint32_t shift = 0;
  uint64_t count = 0;
  uint64_t block_bytes() const { return uint64_t{1} << shift; }
  uint64_t capacity_bytes() const { return capacity_sectors * 512; }
  uint64_t sectors_per_block() const { return block_bytes() / 512; }
};

// Block count = capacity in bytes divided by the block size, rounded up; grow the block while
// there are too many, up to the largest allowed size.
ModelGeometry ModelChooseGeometry(uint64_t capacity_sectors, const TrackingParams& params) {
  ModelGeometry g;
  g.capacity_sectors = capacity_sectors;
  auto blocks_at = [&](uint32_t shift) {
    const uint64_t size = uint64_t{1} << shift;
    const uint64_t bytes = capacity_sectors * 512;
    return bytes / size + (bytes % size != 0 ? 1 : 0);
  };
  g.shift = params.minimum_shift;
  g.count = blocks_at(g.shift);
  while (g.count > params.maximum_count && g.shift < params.maximum_shift) {
    g.shift++;
    g.count = blocks_at(g.shift);
  }
  return g;
}

struct ModelExtents {
  StatusCode code = StatusCode::kOk;
  bool full_backup_required = false;
  std::vector<ByteExtent> extents;
  uint64_t next_offset = 0;
  bool complete = false;
};

class Model {
 public:
  Model(const TrackingParams& params, uint64_t capacity_sectors) : params_(params) {
    Reset(capacity_sectors);
  }

  void Reset(uint64_t capacity_sectors) {
    geometry = ModelChooseGeometry(capacity_sectors, params_);
    read.assign(geometry.count, 0);
    write.assign(geometry.count, 0);
    previous = 0;
    active = 1;
    corrupted = false;
  }

  StatusCode Set(uint64_t sector, uint64_t count, bool both) {
    if (count == 0) return StatusCode::kOk;
    if (corrupted) return StatusCode::kDataLoss;
    const u128 spb = geometry.sectors_per_block();
    const u128 first = sector / spb;
    const u128 last = (u128{sector} + count - 1) / spb;
    for (u128 b = first; b <= last && b < geometry.count; ++b) {
      if (write[static_cast<size_t>(b)] < active) write[static_cast<size_t>(b)] = active;
    }
    if (last >= geometry.count) {
      if (!both) corrupted = true;
      return StatusCode::kOutOfRange;
    }
    if (both) {
      for (u128 b = first; b <= last; ++b) {
        if (read[static_cast<size_t>(b)] < previous) read[static_cast<size_t>(b)] = previous;
      }
    }
    return StatusCode::kOk;
  }

  // Returns true when this switch wrapped around (and so must draw a new generation).
  bool Switch() {
    previous = active;
    active++;
    if (active == 256) {
      active = 1;
      std::fill(write.begin(), write.end(), 0);
      return true;
    }
    read = write;
    return false;
  }

  StatusCode ReadMap(uint64_t offset, uint64_t length, std::vector<uint8_t>* out) const {
    if (corrupted) return StatusCode::kDataLoss;
    if (u128{offset} + length > geometry.count) return StatusCode::kOutOfRange;
    out->assign(read.begin() + static_cast<ptrdiff_t>(offset),
                read.begin() + static_cast<ptrdiff_t>(offset + length));
    return StatusCode::kOk;
  }

  ModelExtents ChangedExtents(bool generation_matches, int base, uint64_t start,
                              size_t max_extents) const {
    ModelExtents result;
    if (corrupted) {
      result.code = StatusCode::kDataLoss;
      return result;
    }
    if (!generation_matches) {
      result.code = StatusCode::kFailedPrecondition;
      result.full_backup_required = true;
      return result;
    }
    // Within a generation 255 is only ever the wrap-around take that began it, which precedes
    // every later number: such a base means "since the generation began".
    if (base == 255 && previous != 255) base = 0;
    if (base > previous) {
      result.code = StatusCode::kInvalidArgument;
      return result;
    }
    std::vector<ByteExtent> all;
    const uint64_t capacity = geometry.capacity_bytes();
    for (uint64_t b = 0; b < geometry.count; ++b) {
      if (read[b] <= base) continue;
      const uint64_t lo = std::max(b * geometry.block_bytes(), start);
      const uint64_t hi = std::min((b + 1) * geometry.block_bytes(), capacity);
      if (lo >= hi) continue;
      if (!all.empty() && all.back().offset + all.back().length == lo) {
        all.back().length += hi - lo;
      } else {
        all.push_back({lo, hi - lo});
      }
    }
    if (max_extents == 0 || all.size() <= max_extents) {
      result.extents = all;
      result.next_offset = capacity;
      result.complete = true;
    } else {
      result.extents.assign(all.begin(), all.begin() + static_cast<ptrdiff_t>(max_extents));
      result.next_offset = all[max_extents].offset;
      result.complete = false;
    }
    return result;
  }

  ModelGeometry geometry;
  int previous = 0;
  int active = 1;
  bool corrupted = false;
  std::vector<uint8_t> read;
  std::vector<uint8_t> write;

 private:
  TrackingParams params_;
};

// ---------------------------------------------------------------------------------------------
// Sequences

std::string Str(const std::vector<ByteExtent>& extents) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < extents.size() && i < 12; ++i) {
    out << (i ? " " : "") << extents[i].offset << "+" << extents[i].length;
  }
  if (extents.size() > 12) out << " ... (" << extents.size() << ")";
  out << "]";
  return out.str();
}

std::string FirstDifference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) {
    return "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) {
      return "byte " + std::to_string(i) + ": library " + std::to_string(a[i]) + ", model " +
             std::to_string(b[i]);
    }
  }
  return "";
}

struct ParamSet {
  TrackingParams params;
  uint64_t max_capacity_sectors;  // keeps the maps small
};

const ParamSet kParamSets[] = {
    {{}, 2000 * 128},                                                           // 64 KiB blocks
    {{.minimum_shift = 9, .maximum_count = 64, .maximum_shift = 13}, 6000},     // grows, capped
    {{.minimum_shift = 10, .maximum_count = 100, .maximum_shift = 20}, 200000},  // grows a lot
    {{.minimum_shift = 9, .maximum_count = 1, .maximum_shift = 9}, 3000},       // one per sector
    {{.minimum_shift = 12, .maximum_count = 7, .maximum_shift = 30}, 1 << 22},   // few big blocks
};

class Sequence {
 public:
  explicit Sequence(uint64_t seed) : seed_(seed), rng_(seed) {}

  // Runs the whole sequence; returns "" or a description of the first disagreement.
  std::string Run() {
    const ParamSet& set = kParamSets[rng_() % std::size(kParamSets)];
    params_ = set.params;
    max_capacity_ = set.max_capacity_sectors;
    switch_heavy_ = rng_() % 5 == 0;
    allow_corruption_ = rng_() % 3 == 0;
    const int steps = switch_heavy_ ? 600 + static_cast<int>(rng_() % 500)
                                    : 50 + static_cast<int>(rng_() % 500);
    const uint64_t capacity = RandomCapacity();
    auto created = CbtMap::Create(capacity, params_);
    if (!created.ok()) return Describe("Create failed: " + created.status().ToString());
    map_ = std::move(*created);
    model_.emplace(params_, capacity);
    Note("create capacity=" + std::to_string(capacity) + " params=" +
         std::to_string(params_.minimum_shift) + "/" + std::to_string(params_.maximum_count) +
         "/" + std::to_string(params_.maximum_shift) +
         (switch_heavy_ ? " switch-heavy" : "") + (allow_corruption_ ? " corrupting" : ""));
    if (!NewGenerationExpected()) return error_;
    if (!CheckInfo()) return error_;

    for (step_ = 0; step_ < steps; ++step_) {
      if (!Step()) return error_;
      if (!CheckInfo()) return error_;
    }
    if (!CheckExport()) return error_;
    return "";
  }

  int switches() const { return switches_; }
  int wraps() const { return wraps_; }
  int corruptions() const { return corruptions_; }

 private:
  bool Step() {
    const int r = static_cast<int>(rng_() % 1000);
    if (switch_heavy_) {
      if (r < 700) return DoSwitch();
      if (r < 850) return DoSet(false);
      if (r < 900) return DoSet(true);
      if (r < 950) return DoExtents();
      if (r < 980) return DoReadMap();
      if (r < 990) return CheckExport();
      if (r < 998) return DoRestore();
      return DoReset();
    }
    if (r < 350) return DoSet(false);
    if (r < 430) return DoSet(true);
    if (r < 580) return DoSwitch();
    if (r < 680) return DoReadMap();
    if (r < 850) return DoExtents();
    if (r < 880) return DoReset();
    if (r < 920) return CheckExport();
    if (r < 940) return DoRestore();
    return true;  // just the Info() check
  }

  uint64_t RandomCapacity() {
    switch (rng_() % 8) {
      case 0:
        return 0;
      case 1:
        return 1 + rng_() % 16;
      case 2: {
        // Around a multiple of the block size the capacity would get.
        const uint64_t c = 1 + rng_() % max_capacity_;
        const uint64_t spb = ModelChooseGeometry(c, params_).sectors_per_block();
        const uint64_t rounded = std::max<uint64_t>(spb, c / spb * spb);
        const uint64_t delta = rng_() % 3;  // -1, 0, +1
        return delta == 0 ? rounded - 1 : rounded + delta - 1;
      }
      default:
        return 1 + rng_() % max_capacity_;
    }
  }

  // A random write range; mostly inside the map, sometimes past it, empty or overflowing.
  std::pair<uint64_t, uint64_t> RandomRange(bool may_leave_map) {
    const ModelGeometry& g = model_->geometry;
    const uint64_t spb = g.sectors_per_block();
    const uint64_t end = g.count * spb;  // first sector past the last block
    const int r = static_cast<int>(rng_() % 100);
    if (r < 5) return {rng_() % (end + 10), 0};
    if (may_leave_map) {
      if (r < 12) {
        const uint64_t sector = end - std::min(end, rng_() % (2 * spb + 1));
        return {sector, 1 + rng_() % (3 * spb)};
      }
      if (r < 14) return {UINT64_MAX - rng_() % 1000, 1 + rng_() % 2000};
      if (r < 16) return {rng_() % (end + 1), UINT64_MAX - rng_() % 3};
    }
    if (end == 0) return {0, 0};
    const uint64_t sector = rng_() % end;
    uint64_t count;
    switch (rng_() % 4) {
      case 0:
        count = 1;
        break;
      case 1:
        count = 1 + rng_() % (4 * spb);
        break;
      case 2:
        count = spb - sector % spb;  // up to the block boundary
        break;
      default:
        count = 1 + rng_() % (end - sector);
    }
    return {sector, std::min(count, end - sector)};
  }

  bool DoSet(bool both) {
    const bool may_leave = both ? rng_() % 10 == 0 : (allow_corruption_ && rng_() % 12 == 0);
    auto [sector, count] = RandomRange(may_leave);
    Note(std::string(both ? "SetBoth(" : "Set(") + std::to_string(sector) + ", " +
         std::to_string(count) + ")");
    const absl::Status status = both ? map_->SetBoth(sector, count) : map_->Set(sector, count);
    const bool was_corrupted = model_->corrupted;
    const StatusCode expected = model_->Set(sector, count, both);
    if (!was_corrupted && model_->corrupted) ++corruptions_;
    if (status.code() != expected) {
      return Fail("status " + status.ToString() + ", model expects " +
                  absl::StatusCodeToString(expected));
    }
    return NoGenerationChange();
  }

  bool DoSwitch() {
    Note("Switch()");
    map_->Switch();
    ++switches_;
    if (model_->Switch()) {
      ++wraps_;
      return NewGenerationExpected();
    }
    return NoGenerationChange();
  }

  bool DoReset() {
    const uint64_t capacity = RandomCapacity();
    Note("Reset(" + std::to_string(capacity) + ")");
    const absl::Status status = map_->Reset(capacity);
    if (!status.ok()) return Fail("Reset failed: " + status.ToString());
    model_->Reset(capacity);
    return NewGenerationExpected();
  }

  bool DoReadMap() {
    const uint64_t count = model_->geometry.count;
    uint64_t offset = rng_() % (count + 3);
    uint64_t length = rng_() % (count + 3);
    switch (rng_() % 6) {
      case 0:
        offset = 0;
        length = count;
        break;
      case 1:
        length = offset <= count ? count - offset : 0;
        break;
      case 2:
        length = std::min(length, offset <= count ? count - offset : 0);
        break;
      case 3:
        if (rng_() % 4 == 0) offset = UINT64_MAX - rng_() % 3;
        else length = UINT64_MAX - rng_() % 3;
        break;
      default:
        break;
    }
    Note("ReadMap(" + std::to_string(offset) + ", " + std::to_string(length) + ")");
    std::vector<uint8_t> expected;
    const StatusCode expected_code = model_->ReadMap(offset, length, &expected);
    // Enough room for an in-range read plus a guard byte that must survive.
    std::vector<uint8_t> out(
        static_cast<size_t>(std::min<uint64_t>(length, count) + 1), 0xA5);
    const absl::Status status = map_->ReadMap(offset, length, out.data());
    if (status.code() != expected_code) {
      return Fail("ReadMap status " + status.ToString() + ", model expects " +
                  absl::StatusCodeToString(expected_code));
    }
    if (status.ok()) {
      if (out.back() != 0xA5) return Fail("ReadMap wrote past the requested length");
      out.pop_back();
      const std::string diff = FirstDifference(out, expected);
      if (!diff.empty()) return Fail("ReadMap content: " + diff);
    } else if (out.back() != 0xA5 || std::any_of(out.begin(), out.end(),
                                                 [](uint8_t b) { return b != 0xA5; })) {
      return Fail("failed ReadMap wrote to the buffer");
    }
    return NoGenerationChange();
  }

  bool DoExtents() {
    // Which generation to ask with: mostly the current one.
    GenerationId generation = generation_;
    bool matches = true;
    const int g = static_cast<int>(rng_() % 100);
    if (g < 8 && history_.size() > 1) {
      generation = history_[rng_() % (history_.size() - 1)];  // an old one
      matches = false;
    } else if (g < 12) {
      generation = NewRandomUuid();
      matches = false;
    }
    const int previous = model_->previous;
    int base = rng_() % 5 == 0 ? static_cast<int>(rng_() % 256)
                               : static_cast<int>(rng_() % (previous + 1));
    if (rng_() % 10 == 0) base = previous;
    const uint64_t capacity = model_->geometry.capacity_bytes();
    const uint64_t block = model_->geometry.block_bytes();
    uint64_t start = 0;
    switch (rng_() % 6) {
      case 0:
      case 1:
        start = 0;
        break;
      case 2:
        start = rng_() % (capacity + 1);
        break;
      case 3:
        start = (rng_() % (model_->geometry.count + 1)) * block;
        break;
      case 4:
        start = rng_() % (capacity + 1) / 512 * 512;
        break;
      default:
        start = capacity + rng_() % (2 * block + 1);
    }
    const size_t max_extents = rng_() % 2 == 0 ? 0 : 1 + rng_() % 4;
    const bool follow_pages = rng_() % 2 == 0;

    for (int page_number = 0;; ++page_number) {
      Note("ChangedExtents(" + std::string(matches ? "current" : "other") + " generation, base " +
           std::to_string(base) + ", start " + std::to_string(start) + ", max " +
           std::to_string(max_extents) + ")");
      const ModelExtents expected = model_->ChangedExtents(matches, base, start, max_extents);
      auto page = map_->ChangedExtents(generation, static_cast<uint8_t>(base), start,
                                       max_extents);
      if (page.status().code() != expected.code) {
        return Fail("ChangedExtents status " + page.status().ToString() + ", model expects " +
                    absl::StatusCodeToString(expected.code));
      }
      if (IsFullBackupRequired(page.status()) != expected.full_backup_required) {
        return Fail("IsFullBackupRequired disagrees: " + page.status().ToString());
      }
      if (!page.ok()) break;
      if (page->extents != expected.extents) {
        return Fail("extents " + Str(page->extents) + ", model " + Str(expected.extents));
      }
      if (page->next_offset != expected.next_offset || page->complete != expected.complete) {
        return Fail("next_offset/complete " + std::to_string(page->next_offset) + "/" +
                    std::to_string(page->complete) + ", model " +
                    std::to_string(expected.next_offset) + "/" +
                    std::to_string(expected.complete));
      }
      if (page->complete || !follow_pages || page_number > 50) break;
      start = page->next_offset;
    }
    return NoGenerationChange();
  }

  bool DoRestore() {
    Note("FromState(ExportState())");
    auto restored = CbtMap::FromState(map_->ExportState(), params_);
    if (!restored.ok()) return Fail("FromState refused an exported state: " +
                                    restored.status().ToString());
    map_ = std::move(*restored);
    return NoGenerationChange() && CheckExport();
  }

  bool CheckExport() {
    const CbtMapState state = map_->ExportState();
    const Model& m = *model_;
    if (state.geometry.capacity_sectors != m.geometry.capacity_sectors ||
        state.geometry.block_shift != m.geometry.shift ||
        state.geometry.block_count != m.geometry.count) {
      return Fail("exported geometry differs");
    }
    if (state.snap_number_previous != m.previous || state.snap_number_active != m.active) {
      return Fail("exported numbers " + std::to_string(state.snap_number_previous) + "/" +
                  std::to_string(state.snap_number_active) + ", model " +
                  std::to_string(m.previous) + "/" + std::to_string(m.active));
    }
    if (state.corrupted != m.corrupted) return Fail("exported corrupted flag differs");
    if (state.generation_id != generation_) return Fail("exported generation differs");
    std::string diff = FirstDifference(state.read_map, m.read);
    if (!diff.empty()) return Fail("exported read map: " + diff);
    diff = FirstDifference(state.write_map, m.write);
    if (!diff.empty()) return Fail("exported write map: " + diff);
    return true;
  }

  bool CheckInfo() {
    const CbtInfo info = map_->Info();
    const Model& m = *model_;
    if (info.capacity_bytes != m.geometry.capacity_bytes() ||
        info.block_size != m.geometry.block_bytes() || info.block_count != m.geometry.count) {
      return Fail("Info geometry " + std::to_string(info.capacity_bytes) + "/" +
                  std::to_string(info.block_size) + "/" + std::to_string(info.block_count) +
                  ", model " + std::to_string(m.geometry.capacity_bytes()) + "/" +
                  std::to_string(m.geometry.block_bytes()) + "/" +
                  std::to_string(m.geometry.count));
    }
    if (info.changes_number != m.previous) {
      return Fail("Info changes_number " + std::to_string(info.changes_number) + ", model " +
                  std::to_string(m.previous));
    }
    if (info.corrupted != m.corrupted || map_->corrupted() != m.corrupted) {
      return Fail("corrupted flag differs from the model");
    }
    if (info.generation_id != generation_) return Fail("generation changed unexpectedly");
    return true;
  }

  bool NewGenerationExpected() {
    const GenerationId now = map_->Info().generation_id;
    if (now.is_nil()) return Fail("nil generation");
    if ((now.bytes[6] >> 4) != 4 || (now.bytes[8] & 0xC0) != 0x80) {
      return Fail("generation is not a version-4 UUID");
    }
    for (const GenerationId& old : history_) {
      if (old == now) return Fail("generation did not change (or came back)");
    }
    history_.push_back(now);
    generation_ = now;
    return true;
  }

  bool NoGenerationChange() {
    if (map_->Info().generation_id != generation_) return Fail("generation changed");
    return true;
  }

  void Note(std::string op) {
    log_.push_back("#" + std::to_string(step_) + " " + std::move(op));
    if (log_.size() > 25) log_.pop_front();
  }

  bool Fail(const std::string& what) {
    error_ = Describe(what);
    return false;
  }

  std::string Describe(const std::string& what) const {
    std::ostringstream out;
    out << "seed " << seed_ << " (reproduce with CBT_PROPERTY_SEED=" << seed_ << "): step "
        << step_ << ": " << what << "\nlast operations:\n";
    for (const std::string& op : log_) out << "  " << op << "\n";
    return out.str();
  }

  const uint64_t seed_;
  std::mt19937_64 rng_;
  TrackingParams params_;
  uint64_t max_capacity_ = 0;
  bool switch_heavy_ = false;
  bool allow_corruption_ = false;
  std::unique_ptr<CbtMap> map_;
  std::optional<Model> model_;
  GenerationId generation_;
  std::vector<GenerationId> history_;
  std::deque<std::string> log_;
  std::string error_;
  int step_ = -1;
  int switches_ = 0;
  int wraps_ = 0;
  int corruptions_ = 0;
};

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::strtoull(value, nullptr, 0) : fallback;
}

constexpr uint64_t kBaseSeed = 0xCB7'0000'0000;
constexpr int kShards = 4;

class CbtMapPropertyTest : public testing::TestWithParam<int> {};

TEST_P(CbtMapPropertyTest, AgreesWithTheReferenceModel) {
  if (const char* one = std::getenv("CBT_PROPERTY_SEED"); one != nullptr && *one != '\0') {
    if (GetParam() != 0) GTEST_SKIP() << "CBT_PROPERTY_SEED runs in shard 0 only";
    const uint64_t seed = std::strtoull(one, nullptr, 0);
    Sequence sequence(seed);
    const std::string error = sequence.Run();
    if (!error.empty()) FAIL() << error;
    return;
  }
  // Each shard scans with another implementation of the extent scanner (when the CPU has it).
  const ScanIsa best = ActiveScanIsa();
  // (The last shard uses the default, the best the CPU has.)
  const ScanIsa isas[kShards] = {ScanIsa::kScalar, ScanIsa::kSse2, ScanIsa::kAvx2, best};
  if (!SetScanIsaForTesting(isas[GetParam()])) SetScanIsaForTesting(best);
  struct Restore {
    ScanIsa isa;
    ~Restore() { SetScanIsaForTesting(isa); }
  } restore{best};
  const uint64_t sequences = EnvOr("CBT_PROPERTY_SEQUENCES", 2500);
  int switches = 0, wraps = 0, corruptions = 0;
  for (uint64_t i = 0; i < sequences; ++i) {
    const uint64_t seed = kBaseSeed + i * kShards + static_cast<uint64_t>(GetParam());
    Sequence sequence(seed);
    const std::string error = sequence.Run();
    if (!error.empty()) FAIL() << "sequence " << i << " of shard " << GetParam() << ": " << error;
    switches += sequence.switches();
    wraps += sequence.wraps();
    corruptions += sequence.corruptions();
  }
  // The generator must actually reach the interesting states.
  EXPECT_GT(wraps, 10) << "too few wrap-arounds past 255";
  EXPECT_GT(corruptions, 10) << "too few corrupting writes";
  std::printf("shard %d (%s scanner): %llu sequences, %d switches, %d wraps, %d corruptions\n",
              GetParam(), ScanIsaName(ActiveScanIsa()),
              static_cast<unsigned long long>(sequences), switches, wraps, corruptions);
}

INSTANTIATE_TEST_SUITE_P(Shards, CbtMapPropertyTest, testing::Range(0, kShards));

// The model itself, on the hand-checked facts, so that a model bug cannot hide a library bug.
TEST(ReferenceModelTest, SanityChecks) {
  const ModelGeometry g = ModelChooseGeometry(uint64_t{1} << 31, {});  // 1 TiB
  EXPECT_EQ(g.shift, 19u);
  EXPECT_EQ(g.count, 2'097'152u);
  Model m({}, 1000);
  EXPECT_EQ(m.geometry.count, 8u);
  EXPECT_EQ(m.Set(1000, 24, false), StatusCode::kOk);
  EXPECT_EQ(m.Set(900, 200, false), StatusCode::kOutOfRange);
  EXPECT_TRUE(m.corrupted);
  EXPECT_EQ(m.write[7], 1);
  m.Reset(1000);
  for (int i = 0; i < 254; ++i) EXPECT_FALSE(m.Switch());
  EXPECT_EQ(m.previous, 254);
  EXPECT_TRUE(m.Switch());
  EXPECT_EQ(m.previous, 255);
  EXPECT_EQ(m.active, 1);
}

}  // namespace
}  // namespace cbt
