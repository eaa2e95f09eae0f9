#include "cbtctl/output.h"

#include <algorithm>

#include "google/protobuf/util/json_util.h"

namespace cbt::cbtctl {

Fields& Fields::Add(std::string key, std::string value) {
  items_.emplace_back(std::move(key), std::move(value));
  return *this;
}

void Fields::Write(std::ostream& out, int indent) const {
  size_t width = 0;
  for (const auto& [key, value] : items_) width = std::max(width, key.size());
  for (const auto& [key, value] : items_) {
    out << std::string(indent, ' ') << key << ':';
    if (!value.empty()) out << std::string(width - key.size() + 2, ' ') << value;
    out << '\n';
  }
}

Table::Table(std::vector<std::string> header, std::vector<bool> right_aligned)
    : right_aligned_(std::move(right_aligned)) {
  rows_.push_back(std::move(header));
}

void Table::AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

void Table::Write(std::ostream& out, int indent) const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  for (const auto& row : rows_) {
    std::string line(indent, ' ');
    for (size_t c = 0; c < row.size(); ++c) {
      const std::string pad(widths[c] - row[c].size(), ' ');
      const bool right = c < right_aligned_.size() && right_aligned_[c];
      if (c > 0) line += "  ";
      line += right ? pad + row[c] : row[c] + (c + 1 < row.size() ? pad : "");
    }
    out << line << '\n';
  }
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) return "{\"error\":\"cannot convert reply to JSON\"}";
  return json;
}

}  // namespace cbt::cbtctl
