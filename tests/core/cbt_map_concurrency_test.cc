// Multi-threaded tests of CbtMap: Set() on I/O threads racing Switch(), and a mix of every
// operation at once.
//
// The key contract (core/cbt_map.h): a Set() that returned before Switch() started is in the
// read map after that switch. The first test checks it precisely:
//  - the switching thread publishes `started = k` just before Switch #k and `completed = k`
//    just after, and snapshots the whole read map right after each switch (nothing else changes
//    the read map, so the snapshot is exactly the read map switch #k produced);
//  - each setter loads c0 = completed before calling Set() and s1 = started after it returned.
//    Switch #c0 had finished before the Set began, so the Set marked its blocks with a number of
//    at least c0 + 1. Switch #(s1 + 1) began after the Set returned, so its snapshot must show
//    every block of the Set with a number >= c0 + 1 (and so must every later one: bytes never go
//    down inside a generation, and fewer than 255 switches are made).
//  - Conversely a Set whose c0 >= k started after switch #k was over, so a block that only such
//    Sets touched must read 0 in snapshot #k; and snapshot #k never holds a number above k.
// After the threads stop, one more switch makes every written block visible.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/cbt_map.h"
#include "gtest/gtest.h"

namespace cbt {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kSpb = 128;  // 64 KiB blocks

struct SetRecord {
  uint32_t first_block;
  uint32_t last_block;
  uint8_t completed_before;  // c0
  uint8_t started_after;     // s1
};

struct RoundResult {
  uint64_t sets = 0;
  int failures = 0;
  std::string first_failure;
  void Fail(const std::string& what) {
    if (failures++ == 0) first_failure = what;
  }
};

// One round: `setters` threads hammer Set() while this thread makes `switches` switches.
RoundResult RunSwitchRound(uint64_t seed, int setters, int switches, uint32_t blocks) {
  RoundResult result;
  auto created = CbtMap::Create(uint64_t{blocks} * kSpb);
  if (!created.ok()) {
    result.Fail(created.status().ToString());
    return result;
  }
  CbtMap& map = **created;

  std::atomic<int> started{0};
  std::atomic<int> completed{0};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> sets_done{0};
  std::vector<std::vector<SetRecord>> records(setters);
  std::vector<std::string> setter_errors(setters);
  constexpr size_t kMaxRecordsPerThread = 1'500'000;

  std::vector<std::thread> threads;
  for (int t = 0; t < setters; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(seed * 131 + t);
      std::vector<SetRecord>& mine = records[t];
      mine.reserve(1 << 16);
      while (!stop.load(std::memory_order_relaxed) && mine.size() < kMaxRecordsPerThread) {
        // 30% in a hot region of 16 blocks shared by everybody, the rest anywhere.
        const uint64_t region = rng() % 10 < 3 ? std::min<uint32_t>(16, blocks) : blocks;
        const uint64_t sector = rng() % (region * kSpb);
        const uint64_t count =
            std::min<uint64_t>(1 + rng() % (3 * kSpb), uint64_t{blocks} * kSpb - sector);
        const int c0 = completed.load(std::memory_order_seq_cst);
        const absl::Status status = map.Set(sector, count);
        const int s1 = started.load(std::memory_order_seq_cst);
        if (!status.ok()) {
          setter_errors[t] = status.ToString();
          return;
        }
        mine.push_back({static_cast<uint32_t>(sector / kSpb),
                        static_cast<uint32_t>((sector + count - 1) / kSpb),
                        static_cast<uint8_t>(c0), static_cast<uint8_t>(s1)});
        sets_done.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }

  // snapshots[k]: the read map right after switch #k (k = 0: the fresh map).
  std::vector<std::vector<uint8_t>> snapshots(switches + 2, std::vector<uint8_t>(blocks));
  for (int k = 1; k <= switches; ++k) {
    // Let the setters make progress between switches (only 2 CPUs here), but not forever.
    const uint64_t before = sets_done.load(std::memory_order_relaxed);
    const auto deadline = Clock::now() + std::chrono::milliseconds(5);
    while (sets_done.load(std::memory_order_relaxed) < before + 300 && Clock::now() < deadline) {
      std::this_thread::yield();
    }
    started.store(k, std::memory_order_seq_cst);
    map.Switch();
    const absl::Status status = map.ReadMap(0, blocks, snapshots[k].data());
    completed.store(k, std::memory_order_seq_cst);
    if (!status.ok()) result.Fail("ReadMap: " + status.ToString());
  }
  stop.store(true);
  for (auto& thread : threads) thread.join();
  for (const std::string& error : setter_errors) {
    if (!error.empty()) result.Fail("Set failed: " + error);
  }
  // Everything has returned: one more switch must show all of it.
  const int last = switches + 1;
  map.Switch();
  if (absl::Status status = map.ReadMap(0, blocks, snapshots[last].data()); !status.ok()) {
    result.Fail("ReadMap: " + status.ToString());
  }

  // required[k][b]: the least number snapshot #k must show for block b, from the Sets whose
  // first switch after returning is #k. min_c0[b]: the earliest epoch any Set touched b in.
  std::vector<std::vector<uint8_t>> required(last + 1, std::vector<uint8_t>(blocks, 0));
  std::vector<int> min_c0(blocks, 1 << 20);
  std::vector<bool> written(blocks, false);
  for (const auto& mine : records) {
    result.sets += mine.size();
    for (const SetRecord& r : mine) {
      const int k = r.started_after + 1;
      if (r.completed_before > r.started_after) {
        result.Fail("counter bookkeeping is wrong");
        continue;
      }
      for (uint32_t b = r.first_block; b <= r.last_block; ++b) {
        required[k][b] = std::max<uint8_t>(required[k][b], r.completed_before + 1);
        min_c0[b] = std::min<int>(min_c0[b], r.completed_before);
        written[b] = true;
      }
    }
  }
  std::vector<uint8_t> running(blocks, 0);
  for (int k = 1; k <= last; ++k) {
    for (uint32_t b = 0; b < blocks; ++b) {
      running[b] = std::max(running[b], required[k][b]);
      const uint8_t got = snapshots[k][b];
      auto where = [&] {
        return "seed " + std::to_string(seed) + ", snapshot after switch #" + std::to_string(k) +
               ", block " + std::to_string(b) + " holds " + std::to_string(got) + ": ";
      };
      if (got < running[b]) {
        result.Fail(where() + "an acknowledged write needs >= " + std::to_string(running[b]) +
                    " (a mark was lost)");
      }
      if (got > k) result.Fail(where() + "above the switch number");
      if (k > 1 && got < snapshots[k - 1][b]) result.Fail(where() + "the number went down");
      if (k <= min_c0[b] && got != 0) {
        result.Fail(where() + "marked before any write to it could have been seen");
      }
      if (k == last && written[b] && got == 0) result.Fail(where() + "a written block reads 0");
      if (k == last && !written[b] && got != 0) result.Fail(where() + "an unwritten block");
    }
  }
  return result;
}

TEST(CbtMapConcurrencyTest, NoAcknowledgedMarkIsLostAcrossSwitches) {
  // Up to 6 rounds, but at least 2 and no new one after 6 s (a loaded machine preempts markers
  // inside the gate, and each switch then waits for them).
  const auto budget = Clock::now() + std::chrono::seconds(6);
  uint64_t total_sets = 0;
  uint64_t rounds = 0;
  for (; rounds < 6 && (rounds < 2 || Clock::now() < budget); ++rounds) {
    const RoundResult result = RunSwitchRound(/*seed=*/1000 + rounds, /*setters=*/3,
                                              /*switches=*/200, /*blocks=*/4096);
    EXPECT_EQ(result.failures, 0) << result.first_failure;
    total_sets += result.sets;
    if (result.failures != 0) break;
  }
  // The test is only meaningful if the setters really ran while switching.
  EXPECT_GT(total_sets, rounds * 200 * 50);
  std::printf("%llu acknowledged Sets checked in %llu rounds\n",
              static_cast<unsigned long long>(total_sets), static_cast<unsigned long long>(rounds));
}

TEST(CbtMapConcurrencyTest, SingleHotBlock) {
  // Everybody writes the same two blocks: the worst case for lost updates of one byte.
  uint64_t total_sets = 0;
  for (uint64_t round = 0; round < 3; ++round) {
    const RoundResult result = RunSwitchRound(/*seed=*/2000 + round, /*setters=*/2,
                                              /*switches=*/250, /*blocks=*/2);
    EXPECT_EQ(result.failures, 0) << result.first_failure;
    total_sets += result.sets;
  }
  EXPECT_GT(total_sets, 1000u);
}

TEST(CbtMapConcurrencyTest, ShortLivedThreadsReuseSlots) {
  // Threads come and go (their gate slots are recycled) while switches run.
  auto created = CbtMap::Create(1024 * kSpb);
  ASSERT_TRUE(created.ok());
  CbtMap& map = **created;
  std::atomic<bool> stop{false};
  std::thread switcher([&] {
    int n = 0;
    while (!stop.load() && n < 200) {
      map.Switch();
      ++n;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::atomic<int> failures{0};
  for (int wave = 0; wave < 50; ++wave) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, wave, t] {
        const uint64_t block = static_cast<uint64_t>(wave * 4 + t) % 1024;
        for (int i = 0; i < 100; ++i) {
          if (!map.Set(block * kSpb + i % kSpb, 1).ok()) failures.fetch_add(1);
        }
      });
    }
    for (auto& thread : threads) thread.join();
  }
  stop.store(true);
  switcher.join();
  EXPECT_EQ(failures.load(), 0);
  map.Switch();
  std::vector<uint8_t> bytes(1024);
  ASSERT_TRUE(map.ReadMap(0, 1024, bytes.data()).ok());
  for (int wave = 0; wave < 50; ++wave) {
    for (int t = 0; t < 4; ++t) {
      EXPECT_NE(bytes[(wave * 4 + t) % 1024], 0) << "block " << (wave * 4 + t);
    }
  }
  EXPECT_EQ(bytes[200], 0);
}

// Every operation at once, including resets to other capacities and switches past the wrap:
// nothing may crash, every in-range call must succeed, and every state observed must be one a
// map can be in.
TEST(CbtMapConcurrencyTest, MixedOperationsStayConsistent) {
  constexpr uint64_t kMinCapacity = 1000 * kSpb;
  const uint64_t capacities[] = {kMinCapacity, 1500 * kSpb + 77, 4096 * kSpb, 1000 * kSpb + 1};
  auto created = CbtMap::Create(kMinCapacity);
  ASSERT_TRUE(created.ok());
  CbtMap& map = **created;
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::atomic<uint64_t> ops{0};
  std::string first_failure;
  std::atomic<bool> have_failure{false};
  auto fail = [&](const std::string& what) {
    failures.fetch_add(1);
    bool expected = false;
    if (have_failure.compare_exchange_strong(expected, true)) first_failure = what;
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {  // Set
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      while (!stop.load(std::memory_order_relaxed)) {
        const uint64_t sector = rng() % (kMinCapacity - 512);
        if (absl::Status s = map.Set(sector, 1 + rng() % 512); !s.ok()) fail("Set: " + s.ToString());
        ops.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  threads.emplace_back([&] {  // SetBoth
    std::mt19937_64 rng(7);
    while (!stop.load(std::memory_order_relaxed)) {
      const uint64_t sector = rng() % (kMinCapacity - 512);
      if (absl::Status s = map.SetBoth(sector, 1 + rng() % 512); !s.ok()) {
        fail("SetBoth: " + s.ToString());
      }
      // Out of range for every capacity used: refused, never corrupting.
      if (rng() % 16 == 0 && map.SetBoth(1'000'000'000, 1).code() != absl::StatusCode::kOutOfRange) {
        fail("out-of-range SetBoth accepted");
      }
      ops.fetch_add(1, std::memory_order_relaxed);
    }
  });
  threads.emplace_back([&] {  // readers
    std::vector<uint8_t> buffer;
    while (!stop.load(std::memory_order_relaxed)) {
      const CbtInfo info = map.Info();
      if (info.corrupted) fail("map became corrupted");
      buffer.resize(info.block_count);
      // The map may have been reset to another size since Info(): OutOfRange is then possible.
      const absl::Status read = map.ReadMap(0, info.block_count, buffer.data());
      if (!read.ok() && read.code() != absl::StatusCode::kOutOfRange) {
        fail("ReadMap: " + read.ToString());
      }
      auto page = map.ChangedExtents(info.generation_id, info.changes_number, 0, 0);
      if (page.ok()) {
        uint64_t end = 0;
        for (size_t i = 0; i < page->extents.size(); ++i) {
          const ByteExtent& e = page->extents[i];
          if (e.length == 0 || (i > 0 && e.offset <= end) || e.offset + e.length > page->next_offset) {
            fail("malformed extents");
            break;
          }
          end = e.offset + e.length;
        }
        if (!page->complete) fail("unlimited page not complete");
      } else if (!IsFullBackupRequired(page.status())) {
        // A reset or wrap between Info() and the call changes the generation; nothing else fails.
        fail("ChangedExtents: " + page.status().ToString());
      }
      const CbtMapState state = map.ExportState();
      const uint64_t count = state.geometry.block_count;
      if (state.read_map.size() != count || state.write_map.size() != count) fail("map sizes");
      const int previous = state.snap_number_previous;
      const int active = state.snap_number_active;
      if (!((active >= 1 && previous == active - 1) || (previous == 255 && active == 1))) {
        fail("numbers " + std::to_string(previous) + "/" + std::to_string(active));
      }
      for (uint64_t b = 0; b < count; ++b) {
        if (state.write_map[b] > active || state.read_map[b] > previous) {
          fail("byte above its number at block " + std::to_string(b));
          break;
        }
      }
      auto restored = CbtMap::FromState(state);
      if (!restored.ok()) fail("exported state refused: " + restored.status().ToString());
      ops.fetch_add(1, std::memory_order_relaxed);
    }
  });

  // This thread: switches (several wraps past 255) and occasional resets.
  std::mt19937_64 rng(99);
  int wraps = 0, resets = 0;
  GenerationId generation = map.Info().generation_id;
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  for (int i = 0; i < 1200 || Clock::now() < deadline; ++i) {
    if (Clock::now() > deadline + std::chrono::seconds(5)) break;
    if (i % 400 == 399) {
      if (absl::Status s = map.Reset(capacities[rng() % std::size(capacities)]); !s.ok()) {
        fail("Reset: " + s.ToString());
      }
      ++resets;
      generation = map.Info().generation_id;
      continue;
    }
    const uint8_t before = map.ExportState().snap_number_active;
    map.Switch();
    const GenerationId now = map.Info().generation_id;
    if (before == 255) {
      ++wraps;
      if (now == generation) fail("wrap without a new generation");
    } else if (now != generation) {
      fail("generation changed without a wrap or reset");
    }
    generation = now;
    if (i % 8 == 0) std::this_thread::yield();
  }
  stop.store(true);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0) << first_failure;
  EXPECT_FALSE(map.corrupted());
  EXPECT_GT(ops.load(), 1000u);
  EXPECT_GE(wraps + resets, 2);
  std::printf("%llu operations, %d wraps, %d resets\n",
              static_cast<unsigned long long>(ops.load()), wraps, resets);
}

TEST(CbtMapConcurrencyTest, CorruptionFromOneThreadStopsTheOthers) {
  auto created = CbtMap::Create(100 * kSpb);
  ASSERT_TRUE(created.ok());
  CbtMap& map = **created;
  std::atomic<int> running{0};
  std::atomic<int> saw_data_loss{0};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      running.fetch_add(1);
      // Write until the map is reported lost (bounded, in case it never is).
      for (uint64_t i = 0; i < 200'000'000; ++i) {
        const absl::Status s = map.Set(i % (100 * kSpb), 1);
        if (s.code() == absl::StatusCode::kDataLoss) {
          saw_data_loss.fetch_add(1);
          return;
        }
        if (!s.ok()) unexpected.fetch_add(1);
      }
    });
  }
  while (running.load() < 3) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(map.Set(100 * kSpb, 1).code(), absl::StatusCode::kOutOfRange);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_EQ(saw_data_loss.load(), 3) << "every writer must see DataLoss once the map is corrupted";
  EXPECT_TRUE(map.corrupted());
  EXPECT_EQ(map.Set(0, 1).code(), absl::StatusCode::kDataLoss);
  ASSERT_TRUE(map.Reset(100 * kSpb).ok());
  EXPECT_TRUE(map.Set(0, 1).ok());
}

}  // namespace
}  // namespace cbt
