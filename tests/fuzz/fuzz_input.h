// A tiny byte reader for the fuzz targets: every read succeeds (zeros past the end).
#ifndef CBT_TESTS_FUZZ_FUZZ_INPUT_H_
#define CBT_TESTS_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace cbt::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  size_t remaining() const { return pos_ < size_ ? size_ - pos_ : 0; }
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint32_t U32() { return U16() | (uint32_t{U16()} << 16); }
  uint64_t U64() { return U32() | (uint64_t{U32()} << 32); }
  bool Bool() { return (U8() & 1) != 0; }
  // Copies up to `length` bytes (fewer at the end of the input) into `out`; returns the count.
  size_t Bytes(void* out, size_t length) {
    const size_t n = length < remaining() ? length : remaining();
    if (n != 0) std::memcpy(out, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  std::string String(size_t max_length) {
    std::string s(U8() % (max_length + 1), '\0');
    s.resize(Bytes(s.data(), s.size()));
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace cbt::fuzz

#endif  // CBT_TESTS_FUZZ_FUZZ_INPUT_H_
