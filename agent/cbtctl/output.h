// Generic output building blocks: aligned "key: value" lines, aligned tables, JSON lines.
#ifndef CBT_AGENT_CBTCTL_OUTPUT_H_
#define CBT_AGENT_CBTCTL_OUTPUT_H_

#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/message.h"

namespace cbt::cbtctl {

// Lines "key:   value" with the values aligned in one column.
class Fields {
 public:
  Fields& Add(std::string key, std::string value);
  void Write(std::ostream& out, int indent = 0) const;
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

// Columns separated by two spaces; cells left-aligned except those of `right_aligned` columns.
class Table {
 public:
  explicit Table(std::vector<std::string> header, std::vector<bool> right_aligned = {});
  void AddRow(std::vector<std::string> row);
  void Write(std::ostream& out, int indent = 0) const;

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_aligned_;
};

// One line of JSON with the proto field names (as in the .proto) and all fields present.
std::string ToJson(const google::protobuf::Message& message);

inline const char* YesNo(bool value) { return value ? "yes" : "no"; }

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_OUTPUT_H_
