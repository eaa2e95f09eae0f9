// The command and option tables, and the help text made from them.
#include <algorithm>
#include <sstream>

#include "cbtctl/command_line.h"

namespace cbt::cbtctl {

const std::vector<OptionSpec>& GlobalOptionSpecs() {
  static const std::vector<OptionSpec> specs = {
      {"address", "ADDR",
       "unix:/path or host:port (default unix:/run/cbt-agent/agent.sock)"},
      {"tls_ca", "FILE", "PEM CA bundle to verify the agent's certificate (TCP only)"},
      {"tls_cert", "FILE", "PEM client certificate for mutual TLS (with --tls_key)"},
      {"tls_key", "FILE", "PEM private key of --tls_cert"},
      {"tls_server_name", "NAME", "expected name in the agent's certificate (TLS only)"},
      {"token_file", "FILE",
       "file with a bearer token for the agent's --auth_tokens_file (TLS only; a file keeps it "
       "out of ps)"},
      {"insecure", "", "plaintext TCP (no TLS); unix sockets are always plaintext"},
      {"timeout", "SECONDS",
       "deadline per call (default 30; streams have none unless given; 0 = none)"},
      {"json", "", "print replies as JSON, one object per line (proto field names)"},
      {"help", "", "show help (also -h)"},
  };
  return specs;
}

const std::vector<OptionSpec>& CommandOptionSpecs() {
  static const std::vector<OptionSpec> specs = {
      {"diff-storage", "PATH", "directory, file or block device for copy-on-write data"},
      {"limit", "SIZE", "diff storage limit in bytes, a multiple of 512 (K/M/G/T suffixes)"},
      {"offset", "N", "first map byte (= tracking block index); default 0"},
      {"length", "N", "number of map bytes; default 0 = to the end of the map"},
      {"output", "FILE", "write the raw map bytes to FILE"},
      {"base-generation", "UUID", "generation id recorded with the base backup"},
      {"base-changes", "K", "changes number recorded with the base backup (0..255)"},
      {"start", "OFFSET", "resume from this byte offset (next offset of an earlier call)"},
      {"max", "N", "stop after N extents (default 0 = no limit)"},
  };
  return specs;
}

const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> commands = {
      {"capabilities", "", "Show the agent version, kernel and active backend", "", {}, 0, 0},
      {"echo", "[TEXT...]", "Send TEXT and print what comes back, with the round-trip time",
       "The words of TEXT are joined with single spaces.", {}, 0, -1},
      {"attach", "DEVICE", "Start change tracking on a block device",
       "Idempotent: an already tracked device keeps its CBT.", {}, 1, 1},
      {"detach", "DEVICE", "Stop tracking a device and DISCARD its CBT",
       "The next backup of the device must be a full one. Fails while the device belongs to "
       "a snapshot.",
       {}, 1, 1},
      {"tracker", "DEVICE", "Show one tracked device", "", {}, 1, 1},
      {"trackers", "", "List tracked devices", "", {}, 0, 0},
      {"snapshot create", "--diff-storage PATH --limit SIZE DEVICE...",
       "Take a snapshot of tracked devices",
       "SIZE takes binary K/M/G/T suffixes (64M = 67108864). The devices must be attached "
       "first; the diff storage must not live on one of them.",
       {"diff-storage", "limit"}, 1, -1},
      {"snapshot release", "ID", "Release a snapshot (trackers and CBT stay)", "", {}, 1, 1},
      {"snapshot get", "ID", "Show one snapshot", "", {}, 1, 1},
      {"snapshots", "", "List every snapshot the kernel holds", "", {}, 0, 0},
      {"watch", "[ID]", "Print snapshot events as they happen, until Ctrl-C",
       "Without ID, events of every snapshot.", {}, 0, 1, true},
      {"cbt info", "DEVICE", "Show CBT geometry, generation id and changes number", "", {}, 1,
       1},
      {"cbt map", "DEVICE [--offset N] [--length N] [--output FILE]",
       "Read the CBT map (one change number per tracking block)",
       "Without --output, prints the number of blocks and a histogram of change numbers. "
       "With --output, writes the raw map bytes to FILE as well. With --json, prints each "
       "chunk as a JSON line instead of the summary (data in base64).",
       {"offset", "length", "output"}, 1, 1, true},
      {"cbt dirty", "DEVICE OFFSET:LENGTH...", "Mark byte ranges of a device as changed",
       "OFFSET and LENGTH are bytes with optional K/M/G/T suffixes, e.g. 1G:64K. Ranges are "
       "widened to whole 512-byte sectors.",
       {}, 2, -1},
      {"cbt extents", "DEVICE --base-generation G --base-changes K [--start N] [--max N]",
       "List byte extents changed since a base backup",
       "G and K are the generation id and changes number recorded with the base backup (see "
       "'cbt info'). Prints each extent as offset and length, then the totals and the "
       "generation id and changes number to record for the next incremental. If the "
       "generation changed, a full backup is required. With --json, prints each chunk of "
       "the stream as a JSON line; the last one holds the totals.",
       {"base-generation", "base-changes", "start", "max"}, 1, 1, true},
      {"health", "[SERVICE]", "Check the agent's health (grpc.health.v1)",
       "Exits 0 when SERVING, 4 otherwise. SERVICE defaults to the whole server (\"\").", {},
       0, 1},
      {"help", "[COMMAND]", "Show help for everything or one command", "", {}, 0, -1},
  };
  return commands;
}

const CommandSpec* FindCommand(const std::string& name) {
  for (const CommandSpec& command : Commands()) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

namespace {

std::string OptionLabel(const OptionSpec& option) {
  std::string label = "--" + option.name;
  if (!option.value_name.empty()) label += " " + option.value_name;
  return label;
}

void WriteOptions(std::ostream& out, const std::vector<const OptionSpec*>& options) {
  size_t width = 0;
  for (const OptionSpec* option : options) width = std::max(width, OptionLabel(*option).size());
  for (const OptionSpec* option : options) {
    const std::string label = OptionLabel(*option);
    out << "  " << label << std::string(width - label.size() + 2, ' ') << option->help << "\n";
  }
}

std::vector<const OptionSpec*> All(const std::vector<OptionSpec>& specs) {
  std::vector<const OptionSpec*> all;
  for (const OptionSpec& spec : specs) all.push_back(&spec);
  return all;
}

// Breaks `text` into lines of at most `width` columns at spaces.
std::string Wrap(const std::string& text, size_t width) {
  std::string out;
  size_t column = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(' ', start);
    if (end == std::string::npos) end = text.size();
    const std::string word = text.substr(start, end - start);
    if (column > 0 && column + 1 + word.size() > width) {
      out += '\n';
      column = 0;
    } else if (column > 0) {
      out += ' ';
      ++column;
    }
    out += word;
    column += word.size();
    start = end + 1;
  }
  return out;
}

void WriteCommandList(std::ostream& out, const std::string& group) {
  size_t width = 0;
  for (const CommandSpec& command : Commands()) width = std::max(width, command.name.size());
  for (const CommandSpec& command : Commands()) {
    if (!group.empty() && command.name.rfind(group + " ", 0) != 0) continue;
    out << "  " << command.name << std::string(width - command.name.size() + 2, ' ')
        << command.summary << "\n";
  }
}

}  // namespace

std::string UsageLine(const CommandSpec& command) {
  std::string line = "cbtctl [OPTIONS] " + command.name;
  if (!command.args.empty()) line += " " + command.args;
  return line;
}

std::string GeneralHelp() {
  std::ostringstream out;
  out << "Usage: cbtctl [OPTIONS] COMMAND [ARGS...]\n\n"
         "Command-line client of the cbt-agent API (changed-block tracking and snapshots).\n"
         "Sizes and offsets are bytes; K/M/G/T suffixes are binary (1K = 1024).\n\n"
         "Commands:\n";
  WriteCommandList(out, "");
  out << "\nOptions (before or after the command):\n";
  WriteOptions(out, All(GlobalOptionSpecs()));
  out << "\nRun 'cbtctl COMMAND --help' for the arguments of a command.\n"
         "Exit status: 0 success, 1 RPC error, 2 usage error, 3 local error (files),\n"
         "4 health not SERVING, 130 interrupted.\n";
  return out.str();
}

std::string GroupHelp(const std::string& group) {
  std::ostringstream out;
  out << "Usage: cbtctl [OPTIONS] " << group << " SUBCOMMAND [ARGS...]\n\nSubcommands:\n";
  WriteCommandList(out, group);
  out << "\nRun 'cbtctl " << group << " SUBCOMMAND --help' for details.\n";
  return out.str();
}

std::string CommandHelp(const CommandSpec& command) {
  std::ostringstream out;
  out << "Usage: " << UsageLine(command) << "\n\n" << command.summary << ".\n";
  if (!command.details.empty()) out << Wrap(command.details, 80) << "\n";
  std::vector<const OptionSpec*> options;
  for (const std::string& name : command.options) {
    for (const OptionSpec& spec : CommandOptionSpecs()) {
      if (spec.name == name) options.push_back(&spec);
    }
  }
  if (!options.empty()) {
    out << "\nOptions:\n";
    WriteOptions(out, options);
  }
  out << "\nGlobal options (--address, --json, --timeout, TLS): see 'cbtctl --help'.\n";
  return out.str();
}

}  // namespace cbt::cbtctl
