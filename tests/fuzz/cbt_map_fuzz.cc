// Differential fuzz target: random operation sequences on cbt::CbtMap against a deliberately
// simple reference model (byte vectors and two numbers), comparing every observable result.
// Traps on the first mismatch.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/cbt_map.h"
#include "core/changed_extents.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using cbt::fuzz::Input;

#define CHECK(cond)                   \
  do {                                \
    if (!(cond)) __builtin_trap();    \
  } while (0)

struct Model {
  uint64_t capacity_sectors = 0;
  uint32_t block_shift = 9;
  uint64_t block_count = 0;
  std::vector<uint8_t> read_map;
  std::vector<uint8_t> write_map;
  uint8_t previous = 0;
  uint8_t active = 1;
  bool corrupted = false;
  cbt::GenerationId generation;  // learned from the map when it draws a new one

  void Reset(uint64_t capacity) {
    capacity_sectors = capacity;
    const uint64_t per_block = uint64_t{1} << (block_shift - 9);
    block_count = (capacity + per_block - 1) / per_block;
    read_map.assign(block_count, 0);
    write_map.assign(block_count, 0);
    previous = 0;
    active = 1;
    corrupted = false;
  }
  uint64_t block_size() const { return uint64_t{1} << block_shift; }
  uint64_t capacity_bytes() const { return capacity_sectors * 512; }

  // Marks the blocks of [sector, sector+count) inside the map; true if all of it was inside.
  bool Mark(std::vector<uint8_t>& map, uint64_t sector, uint64_t count, uint8_t number) {
    const uint64_t per_block_shift = block_shift - 9;
    bool inside = true;
    // Walk block by block; count is small or the range is quickly out of the map.
    for (uint64_t b = sector >> per_block_shift;; ++b) {
      if (b >= block_count) {
        inside = false;
        break;
      }
      if (map[b] < number) map[b] = number;
      // Last sector of block b.
      const uint64_t block_last = ((b + 1) << per_block_shift) - 1;
      const uint64_t last = count - 1 > UINT64_MAX - sector ? UINT64_MAX : sector + (count - 1);
      if (last <= block_last) break;
    }
    if (count - 1 > UINT64_MAX - sector) inside = false;  // 64-bit overflow
    return inside;
  }

  // Returns 0 ok, 1 out of range, 2 data loss.
  int Set(uint64_t sector, uint64_t count) {
    if (count == 0) return 0;
    if (corrupted) return 2;
    if (!Mark(write_map, sector, count, active)) {
      corrupted = true;
      return 1;
    }
    return 0;
  }
  int SetBoth(uint64_t sector, uint64_t count) {
    if (count == 0) return 0;
    if (corrupted) return 2;
    if (!Mark(write_map, sector, count, active)) return 1;
    Mark(read_map, sector, count, previous);
    return 0;
  }
  // Returns true if a new generation was drawn.
  bool Switch() {
    previous = active;
    if (active == 255) {
      active = 1;
      std::fill(write_map.begin(), write_map.end(), 0);
      return true;
    }
    ++active;
    read_map = write_map;
    return false;
  }

  cbt::ChangedExtentsPage Extents(uint8_t since, uint64_t start, size_t max_extents) const {
    cbt::ChangedExtentsPage page;
    page.next_offset = capacity_bytes();
    page.complete = true;
    if (start >= capacity_bytes()) return page;
    const uint64_t bs = block_size();
    for (uint64_t b = start / bs; b < block_count; ++b) {
      if (read_map[b] <= since) continue;
      const uint64_t begin = std::max(b * bs, start);
      const uint64_t end = std::min((b + 1) * bs, capacity_bytes());
      if (!page.extents.empty() && page.extents.back().offset + page.extents.back().length == begin) {
        page.extents.back().length = end - page.extents.back().offset;
        continue;
      }
      if (max_extents != 0 && page.extents.size() == max_extents) {
        page.next_offset = begin;
        page.complete = false;
        return page;
      }
      page.extents.push_back({begin, end - begin});
    }
    return page;
  }
};

uint64_t FuzzSector(Input& in, const Model& m) {
  const uint8_t kind = in.U8();
  switch (kind % 8) {
    case 0:
      return in.U64();  // anything, including overflow territory
    case 1:
      return m.capacity_sectors + (in.U8() % 16) - 8;  // around the end
    default:
      return in.U16() % (m.capacity_sectors + 16);
  }
}

uint64_t FuzzCount(Input& in) {
  const uint8_t kind = in.U8();
  switch (kind % 8) {
    case 0:
      return 0;
    case 1:
      return in.U64();
    case 2:
      return UINT64_MAX - (in.U8() % 4);
    default:
      return (in.U16() % 600) + 1;
  }
}

void CheckInfo(const cbt::CbtMap& map, const Model& m) {
  const cbt::CbtInfo info = map.Info();
  CHECK(info.capacity_bytes == m.capacity_bytes());
  CHECK(info.block_size == m.block_size());
  CHECK(info.block_count == m.block_count);
  CHECK(info.changes_number == m.previous);
  CHECK(info.corrupted == m.corrupted);
  CHECK(map.corrupted() == m.corrupted);
  CHECK(info.generation_id == m.generation);
}

void CheckState(const cbt::CbtMap& map, const Model& m) {
  const cbt::CbtMapState s = map.ExportState();
  CHECK(s.geometry.capacity_sectors == m.capacity_sectors);
  CHECK(s.geometry.block_shift == m.block_shift);
  CHECK(s.geometry.block_count == m.block_count);
  CHECK(s.snap_number_previous == m.previous);
  CHECK(s.snap_number_active == m.active);
  CHECK(s.generation_id == m.generation);
  CHECK(s.corrupted == m.corrupted);
  CHECK(s.read_map == m.read_map);
  CHECK(s.write_map == m.write_map);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  cbt::TrackingParams params;
  params.minimum_shift = 9 + in.U8() % 4;  // 512 B .. 4 KiB blocks
  params.maximum_shift = 26;
  params.maximum_count = uint64_t{1} << 40;  // never grows the block: geometry is predictable
  Model m;
  m.block_shift = params.minimum_shift;
  m.Reset(in.U16() % 4097);
  auto created = cbt::CbtMap::Create(m.capacity_sectors, params);
  CHECK(created.ok());
  std::unique_ptr<cbt::CbtMap> map = std::move(*created);
  m.generation = map->Info().generation_id;
  CHECK(!m.generation.is_nil());

  // Backups recorded along the way: (generation, changes number).
  std::vector<std::pair<cbt::GenerationId, uint8_t>> backups;

  int ops = 0;
  while (!in.empty() && ops++ < 2000) {
    const uint8_t op = in.U8();
    switch (op % 11) {
      case 0:
      case 1: {
        const uint64_t sector = FuzzSector(in, m);
        const uint64_t count = FuzzCount(in);
        const absl::Status st = map->Set(sector, count);
        const int expected = m.Set(sector, count);
        CHECK(expected == 0 ? st.ok()
                            : st.code() == (expected == 1 ? absl::StatusCode::kOutOfRange
                                                          : absl::StatusCode::kDataLoss));
        break;
      }
      case 2: {
        const uint64_t sector = FuzzSector(in, m);
        const uint64_t count = FuzzCount(in);
        const absl::Status st = map->SetBoth(sector, count);
        const int expected = m.SetBoth(sector, count);
        CHECK(expected == 0 ? st.ok()
                            : st.code() == (expected == 1 ? absl::StatusCode::kOutOfRange
                                                          : absl::StatusCode::kDataLoss));
        break;
      }
      case 3: {
        map->Switch();
        const cbt::GenerationId before = m.generation;
        if (m.Switch()) {
          m.generation = map->Info().generation_id;
          CHECK(!(m.generation == before));
        }
        backups.emplace_back(m.generation, m.previous);
        break;
      }
      case 4: {  // many switches at once, to reach the wrap-around quickly
        const int n = in.U8();
        for (int i = 0; i < n; ++i) {
          map->Switch();
          if (m.Switch()) m.generation = map->Info().generation_id;
        }
        backups.emplace_back(m.generation, m.previous);
        break;
      }
      case 5: {
        if (in.U8() % 4 != 0) break;  // rarer
        const uint64_t capacity = in.U16() % 4097;
        const cbt::GenerationId before = m.generation;
        CHECK(map->Reset(capacity).ok());
        m.Reset(capacity);
        m.generation = map->Info().generation_id;
        CHECK(!(m.generation == before));
        break;
      }
      case 6: {
        const uint64_t offset = in.Bool() ? in.U64() : in.U16() % (m.block_count + 4);
        const uint64_t length = in.Bool() ? in.U64() : in.U16() % (m.block_count + 4);
        const bool fits = offset <= m.block_count && length <= m.block_count - offset;
        std::vector<uint8_t> out(fits ? length : 0, 0xAA);
        const absl::Status st = map->ReadMap(offset, length, out.data());
        if (m.corrupted) {
          CHECK(st.code() == absl::StatusCode::kDataLoss);
        } else if (!fits) {
          CHECK(st.code() == absl::StatusCode::kOutOfRange);
        } else {
          CHECK(st.ok());
          CHECK(std::equal(out.begin(), out.end(), m.read_map.begin() + offset));
        }
        break;
      }
      case 7: {
        // Base: a recorded backup, the current one, or a random (generation, number).
        cbt::GenerationId gen = m.generation;
        uint8_t number = m.previous;
        const uint8_t pick = in.U8();
        if (pick % 4 == 0) {
          number = in.U8();
        } else if (pick % 4 == 1 && !backups.empty()) {
          const auto& b = backups[in.U8() % backups.size()];
          gen = b.first;
          number = b.second;
        } else if (pick % 4 == 2) {
          gen.bytes[in.U8() % 16] ^= static_cast<uint8_t>(in.U8() | 1);
        }
        const uint64_t start =
            in.Bool() ? in.U64() : uint64_t{in.U16()} * (in.Bool() ? 512 : 1) % (m.capacity_bytes() + 1024);
        const size_t max_extents = in.U8() % 6;
        auto page = map->ChangedExtents(gen, number, start, max_extents);
        const uint8_t effective = (number == 255 && m.previous != 255) ? 0 : number;
        if (m.corrupted) {
          CHECK(page.status().code() == absl::StatusCode::kDataLoss);
        } else if (!(gen == m.generation)) {
          CHECK(page.status().code() == absl::StatusCode::kFailedPrecondition);
          CHECK(cbt::IsFullBackupRequired(page.status()));
        } else if (effective > m.previous) {
          CHECK(page.status().code() == absl::StatusCode::kInvalidArgument);
          CHECK(!cbt::IsFullBackupRequired(page.status()));
        } else {
          CHECK(page.ok());
          const cbt::ChangedExtentsPage want = m.Extents(effective, start, max_extents);
          CHECK(page->extents == want.extents);
          CHECK(page->next_offset == want.next_offset);
          CHECK(page->complete == want.complete);
        }
        break;
      }
      case 8: {  // save and restore
        cbt::CbtMapState state = map->ExportState();
        auto restored = cbt::CbtMap::FromState(std::move(state), params);
        CHECK(restored.ok());
        map = std::move(*restored);
        CheckInfo(*map, m);
        break;
      }
      case 9: {  // restoring a damaged state must fail cleanly (or succeed if still consistent)
        cbt::CbtMapState state = map->ExportState();
        switch (in.U8() % 5) {
          case 0:
            state.snap_number_active = in.U8();
            break;
          case 1:
            if (!state.read_map.empty()) state.read_map[in.U16() % state.read_map.size()] = in.U8();
            break;
          case 2:
            if (!state.write_map.empty()) state.write_map.pop_back();
            break;
          case 3:
            state.geometry.block_shift = in.U8() % 64;
            break;
          case 4:
            state.geometry.capacity_sectors = in.U64();
            break;
        }
        auto restored = cbt::CbtMap::FromState(std::move(state), params);
        if (restored.ok()) {
          // Accepted states are internally consistent.
          const cbt::CbtMapState s = (*restored)->ExportState();
          CHECK(s.read_map.size() == s.geometry.block_count);
          CHECK(s.write_map.size() == s.geometry.block_count);
          for (uint8_t b : s.write_map) CHECK(b <= s.snap_number_active);
          for (uint8_t b : s.read_map) CHECK(b <= s.snap_number_previous);
        } else {
          CHECK(restored.status().code() == absl::StatusCode::kInvalidArgument);
        }
        break;
      }
      case 10:
        CheckInfo(*map, m);
        break;
    }
  }
  CheckInfo(*map, m);
  CheckState(*map, m);
  return 0;
}
