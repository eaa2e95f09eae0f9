// CowStore under concurrency: origin writers racing image readers (no torn or new data ever
// seen), many threads preserving the same chunk (one copy), origin and image writers together
// (blksnap tests/6000), overflow while writers race.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "test_util.h"
#include "ublk/cow/aligned_io.h"
#include "ublk/cow/cow_store.h"

namespace cbt::ublk {
namespace {

using testing::kKiB;
using testing::kMiB;
using testing::RandomBytes;
using testing::TempDir;

constexpr uint64_t kChunk = 64 * kKiB;
constexpr uint64_t kCapacity = 8 * kMiB;  // 128 chunks

// An aligned buffer for O_DIRECT origin writes.
struct Aligned {
  explicit Aligned(size_t n) { ptr = buffer.Get(n); }
  AlignedBuffer buffer;
  uint8_t* ptr;
};

class CowConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    origin_path_ = dir_.File("origin");
    testing::WriteFile(origin_path_, RandomBytes(kCapacity, 7));
    origin_fd_ = testing::OpenDirect(origin_path_);
    ASSERT_GE(origin_fd_, 0);
    storage_dir_ = dir_.Subdir("storage");
  }
  ~CowConcurrencyTest() override {
    if (origin_fd_ >= 0) ::close(origin_fd_);
  }

  std::unique_ptr<CowStore> NewStore(uint64_t limit = kCapacity, uint64_t chunk = kChunk) {
    auto storage = DiffStorage::Open({storage_dir_, limit}, chunk);
    EXPECT_TRUE(storage.ok()) << storage.status();
    if (!storage.ok()) return nullptr;
    auto store = CowStore::Create(origin_fd_, kCapacity, chunk, *std::move(storage));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // The first `length` bytes of the origin.
  std::vector<uint8_t> ReadOrigin(uint64_t length = kCapacity) {
    std::vector<uint8_t> out(length);
    Aligned buf(length);
    EXPECT_EQ(PreadFull(origin_fd_, buf.ptr, length, 0), 0);
    std::memcpy(out.data(), buf.ptr, length);
    return out;
  }

  TempDir dir_;
  std::string origin_path_;
  std::string storage_dir_;
  int origin_fd_ = -1;
};

// Many short snapshots in a row, so that copies keep racing with image reads (within one
// snapshot every chunk is soon preserved and the race is over). In each round, 2 origin writer
// threads write random 4 KiB-aligned ranges of a 1 MiB hot region (64 chunks of 16 KiB) with
// O_DIRECT after PrepareOriginWrite, while 2 reader threads read random unaligned image ranges
// of the same region and compare them with the region as it was at the snapshot; a testing
// hook sometimes pauses a read between its state check and its origin read. Bounded to ~3 s.
TEST_F(CowConcurrencyTest, ImageReadersNeverSeeNewOrTornDataWhileTheOriginIsWritten) {
  using Clock = std::chrono::steady_clock;
  constexpr uint64_t kRegion = 1 * kMiB;
  constexpr uint64_t kHotChunk = 16 * kKiB;
  constexpr int kWritesPerWriter = 48;
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  std::atomic<uint64_t> reads{0}, writes{0}, rounds{0};
  std::atomic<uint64_t> mismatches{0};
  std::atomic<uint64_t> failures{0};
  std::string first_problem;
  std::mutex problem_mu;
  auto report = [&](const std::string& what) {
    std::lock_guard<std::mutex> lock(problem_mu);
    if (first_problem.empty()) first_problem = what;
  };

  uint64_t seed = 1;
  while (Clock::now() < deadline && mismatches.load() == 0 && failures.load() == 0) {
    const std::vector<uint8_t> snapshot = ReadOrigin(kRegion);
    std::unique_ptr<CowStore> store = NewStore(kCapacity, kHotChunk);
    ASSERT_NE(store, nullptr);
    // Widen the race window: now and then an image read pauses between finding a chunk
    // unpreserved and reading it from the origin, as a preempted queue thread would.
    store->SetOriginReadHookForTesting([](uint64_t) {
      thread_local std::mt19937 rng(std::random_device{}());
      if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
    });
    std::atomic<int> writers_left{2};
    std::vector<std::thread> threads;
    for (int w = 0; w < 2; ++w) {
      threads.emplace_back([&, s = seed++] {
        std::mt19937_64 rng(s);
        Aligned buf(8 * 4096);
        for (int i = 0; i < kWritesPerWriter; ++i) {
          const uint64_t blocks = 1 + rng() % 8;
          const uint64_t offset = (rng() % (kRegion / 4096 - blocks + 1)) * 4096;
          for (uint64_t b = 0; b < blocks * 4096; b += 8) {
            const uint64_t v = rng();
            std::memcpy(buf.ptr + b, &v, 8);
          }
          absl::Status st = store->PrepareOriginWrite(offset, blocks * 4096);
          if (!st.ok()) {
            failures++;
            report(std::string(st.message()));
            break;
          }
          if (PwriteFull(origin_fd_, buf.ptr, blocks * 4096, offset) != 0) {
            failures++;
            report("origin write failed");
            break;
          }
          writes++;
        }
        writers_left--;
      });
    }
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, s = seed++] {
        std::mt19937_64 rng(s);
        std::vector<uint8_t> out(3 * kHotChunk);
        while (writers_left.load() > 0) {
          const uint64_t length = 1 + rng() % (3 * kHotChunk);
          const uint64_t offset = rng() % (kRegion - length + 1);
          absl::Status st = store->ReadImage(offset, length, out.data());
          if (!st.ok()) {
            failures++;
            report(std::string(st.message()));
            return;
          }
          if (std::memcmp(out.data(), snapshot.data() + offset, length) != 0) {
            mismatches++;
            uint64_t at = 0;
            while (out[at] == snapshot[offset + at]) ++at;
            report("image read of " + std::to_string(length) + " bytes at " +
                   std::to_string(offset) + " differs from the snapshot at byte " +
                   std::to_string(offset + at) + " in round " + std::to_string(rounds.load()));
          }
          reads++;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    std::vector<uint8_t> image(kRegion);
    ASSERT_TRUE(store->ReadImage(0, kRegion, image.data()).ok());
    EXPECT_TRUE(image == snapshot) << "round " << rounds.load();
    EXPECT_FALSE(store->corrupted());
    rounds++;
  }
  EXPECT_EQ(mismatches.load(), 0u) << first_problem;
  EXPECT_EQ(failures.load(), 0u) << first_problem;
  EXPECT_GT(reads.load(), 0u);
  EXPECT_GT(writes.load(), 0u);
  std::printf("rounds %llu, image reads %llu, origin writes %llu\n",
              static_cast<unsigned long long>(rounds.load()),
              static_cast<unsigned long long>(reads.load()),
              static_cast<unsigned long long>(writes.load()));
}

TEST_F(CowConcurrencyTest, ConcurrentPreparesOfOneChunkCopyItOnce) {
  for (int round = 0; round < 20; ++round) {
    std::unique_ptr<CowStore> store = NewStore();
    ASSERT_NE(store, nullptr);
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        while (!go.load()) std::this_thread::yield();
        // Different sub-ranges of chunks 5 and 6.
        EXPECT_TRUE(store->PrepareOriginWrite(5 * kChunk + t * 4096, kChunk).ok());
      });
    }
    go = true;
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(store->preserved_chunks(), 2u);
    EXPECT_EQ(store->used_bytes(), 2 * kChunk);
  }
}

// blksnap tests/6000: writes to the image and to the origin at the same time stay isolated.
TEST_F(CowConcurrencyTest, ConcurrentImageAndOriginWritesStayIsolated) {
  const std::vector<uint8_t> snapshot = ReadOrigin();
  std::unique_ptr<CowStore> store = NewStore();
  ASSERT_NE(store, nullptr);
  std::vector<uint8_t> origin_model = snapshot;
  std::vector<uint8_t> image_model = snapshot;
  std::thread origin_writer([&] {
    std::mt19937_64 rng(11);
    Aligned buf(8 * 4096);
    for (int i = 0; i < 400; ++i) {
      const uint64_t blocks = 1 + rng() % 8;
      const uint64_t offset = (rng() % (kCapacity / 4096 - blocks + 1)) * 4096;
      const std::vector<uint8_t> data = RandomBytes(blocks * 4096, rng());
      std::memcpy(buf.ptr, data.data(), data.size());
      ASSERT_TRUE(store->PrepareOriginWrite(offset, data.size()).ok());
      ASSERT_EQ(PwriteFull(origin_fd_, buf.ptr, data.size(), offset), 0);
      std::copy(data.begin(), data.end(), origin_model.begin() + offset);
    }
  });
  std::thread image_writer([&] {
    std::mt19937_64 rng(12);
    for (int i = 0; i < 400; ++i) {
      const uint64_t length = 1 + rng() % (2 * kChunk);
      const uint64_t offset = rng() % (kCapacity - length + 1);
      const std::vector<uint8_t> data = RandomBytes(length, rng());
      ASSERT_TRUE(store->WriteImage(offset, length, data.data()).ok());
      std::copy(data.begin(), data.end(), image_model.begin() + offset);
    }
  });
  origin_writer.join();
  image_writer.join();
  ASSERT_TRUE(store->FlushImage().ok());
  std::vector<uint8_t> image(kCapacity);
  ASSERT_TRUE(store->ReadImage(0, kCapacity, image.data()).ok());
  EXPECT_TRUE(image == image_model);
  EXPECT_TRUE(ReadOrigin() == origin_model);
}

// Overflow while several writers race: exactly one event, every writer keeps going, image
// readers get DataLoss (never wrong data), the origin holds exactly what was written.
TEST_F(CowConcurrencyTest, OverflowUnderConcurrentWritersFiresOnceAndKeepsTheOrigin) {
  const std::vector<uint8_t> snapshot = ReadOrigin();
  std::unique_ptr<CowStore> store = NewStore(/*limit=*/16 * kChunk);
  ASSERT_NE(store, nullptr);
  std::atomic<int> events{0};
  std::atomic<int> event_errno{0};
  store->SetCorruptionCallback([&](int err) {
    events++;
    event_errno = err;
  });
  std::vector<uint8_t> origin_model = snapshot;
  constexpr int kWriters = 4;
  std::atomic<uint64_t> wrong_reads{0};
  std::atomic<bool> writers_done{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    // Writer w owns chunks w, w + kWriters, ...: disjoint, so the model is exact.
    threads.emplace_back([&, w] {
      Aligned buf(kChunk);
      for (uint64_t c = w; c < kCapacity / kChunk; c += kWriters) {
        const std::vector<uint8_t> data = RandomBytes(kChunk, 1000 + c);
        std::memcpy(buf.ptr, data.data(), kChunk);
        ASSERT_TRUE(store->PrepareOriginWrite(c * kChunk, kChunk).ok());
        ASSERT_EQ(PwriteFull(origin_fd_, buf.ptr, kChunk, c * kChunk), 0);
        std::memcpy(origin_model.data() + c * kChunk, data.data(), kChunk);
      }
    });
  }
  threads.emplace_back([&] {
    std::mt19937_64 rng(5);
    std::vector<uint8_t> out(kChunk);
    while (!writers_done.load()) {
      const uint64_t offset = rng() % (kCapacity - kChunk + 1);
      absl::Status st = store->ReadImage(offset, kChunk, out.data());
      if (st.ok() && std::memcmp(out.data(), snapshot.data() + offset, kChunk) != 0) {
        wrong_reads++;
      }
      if (!st.ok()) {
        EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
      }
    }
  });
  for (int w = 0; w < kWriters; ++w) threads[w].join();
  writers_done = true;
  threads.back().join();
  EXPECT_EQ(events.load(), 1);
  EXPECT_EQ(event_errno.load(), ENOSPC);
  EXPECT_TRUE(store->corrupted());
  EXPECT_EQ(store->used_bytes(), 16 * kChunk);
  EXPECT_EQ(wrong_reads.load(), 0u);
  EXPECT_TRUE(ReadOrigin() == origin_model);
}

}  // namespace
}  // namespace cbt::ublk
