#include "blksnap/flavour.h"

#include <fcntl.h>

#include <cctype>

#include "absl/strings/str_cat.h"
#include "backend/errno_status.h"

namespace cbt::blksnap {
namespace {

bool Exists(Kernel& kernel, const std::string& path) {
  FileStatus status;
  return kernel.Stat(path, &status) == 0;
}

absl::StatusOr<std::string> ReadModuleVersion(Kernel& kernel, const std::string& control) {
  int fd = -1;
  if (int err = kernel.Open(control, O_RDWR, &fd); err != 0) {
    return agent::ErrnoStatus(err, absl::StrCat("cannot open blksnap control device ", control),
                              err == EACCES || err == EPERM
                                  ? absl::StatusCode::kPermissionDenied
                                  : absl::StatusCode::kUnavailable);
  }
  blksnap_version version{};
  const int err = kernel.Ioctl(fd, kIoctlVersion, &version);
  kernel.Close(fd);
  if (err != 0) {
    return agent::ErrnoStatus(err, absl::StrCat("IOCTL_BLKSNAP_VERSION on ", control),
                              err == EACCES || err == EPERM
                                  ? absl::StatusCode::kPermissionDenied
                                  : absl::StatusCode::kUnavailable);
  }
  return absl::StrCat(version.major, ".", version.minor, ".", version.revision, ".",
                      version.build);
}

}  // namespace

std::string FlavourName(Flavour flavour) {
  switch (flavour) {
    case Flavour::kLk615:
      return "lk6.15";
    case Flavour::kV7:
      return "v7";
    case Flavour::kVal7:
      return "val7";
  }
  return "unknown";
}

absl::StatusOr<Flavour> ParseFlavour(const std::string& name) {
  if (name == "lk6.15") return Flavour::kLk615;
  if (name == "v7") return Flavour::kV7;
  if (name == "val7") return Flavour::kVal7;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown blksnap flavour '", name, "' (expected auto, lk6.15, v7 or val7)"));
}

std::string ControlDevicePath(Flavour flavour) {
  return flavour == Flavour::kVal7 ? kVal7ControlDevice : kUpstreamControlDevice;
}

std::string ImageDiskName(Flavour flavour, uint32_t major, uint32_t minor) {
  switch (flavour) {
    case Flavour::kLk615:
      return absl::StrCat("blksnap-", major, "-", minor);
    case Flavour::kV7:
      return absl::StrCat("blksnap-image_", major, ":", minor);
    case Flavour::kVal7:
      return absl::StrCat("veeamblksnapimg_", major, ":", minor);
  }
  return "";
}

bool ParseKernelRelease(const std::string& release, int* major, int* minor) {
  size_t pos = 0;
  auto number = [&](int* out) {
    if (pos >= release.size() || !std::isdigit(static_cast<unsigned char>(release[pos]))) {
      return false;
    }
    long value = 0;
    while (pos < release.size() && std::isdigit(static_cast<unsigned char>(release[pos]))) {
      value = value * 10 + (release[pos] - '0');
      if (value > 100000) return false;
      ++pos;
    }
    *out = static_cast<int>(value);
    return true;
  };
  if (!number(major)) return false;
  if (pos >= release.size() || release[pos] != '.') return false;
  ++pos;
  return number(minor);
}

absl::StatusOr<FlavourChoice> DetectFlavour(Kernel& kernel, const std::string& forced) {
  const bool has_val7_control = Exists(kernel, kVal7ControlDevice);
  const bool has_val7_filter = Exists(kernel, kVal7FilterDevice);
  const bool has_upstream_control = Exists(kernel, kUpstreamControlDevice);

  FlavourChoice choice;
  if (!forced.empty() && forced != "auto") {
    absl::StatusOr<Flavour> flavour = ParseFlavour(forced);
    if (!flavour.ok()) return flavour.status();
    choice.flavour = *flavour;
    if (*flavour == Flavour::kVal7) {
      if (!has_val7_control || !has_val7_filter) {
        return absl::UnavailableError(absl::StrCat(
            "blksnap flavour val7 was forced but ", !has_val7_control ? kVal7ControlDevice
                                                                       : kVal7FilterDevice,
            " does not exist (are the veeamblksnap and bdevfilter modules loaded?)"));
      }
    } else if (!has_upstream_control) {
      return absl::UnavailableError(absl::StrCat("blksnap flavour ", forced, " was forced but ",
                                                 kUpstreamControlDevice,
                                                 " does not exist (is the blksnap module loaded?)"));
    }
    choice.reason = absl::StrCat("blksnap: flavour ", forced, " forced by configuration");
  } else if (has_val7_control && has_val7_filter) {
    choice.flavour = Flavour::kVal7;
    choice.reason = absl::StrCat("blksnap: ", kVal7ControlDevice, " and ", kVal7FilterDevice,
                                 " present -> out-of-tree VAL-7.0 interface (val7)");
  } else if (has_upstream_control) {
    std::string release;
    if (int err = kernel.KernelRelease(&release); err != 0) {
      return agent::ErrnoStatus(err, "cannot read the kernel release (uname)",
                                absl::StatusCode::kUnavailable);
    }
    int major = 0;
    int minor = 0;
    if (!ParseKernelRelease(release, &major, &minor)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot tell the blksnap ioctl numbering from kernel release '", release,
          "'; force the flavour (lk6.15 or v7)"));
    }
    const bool new_numbering = major > 6 || (major == 6 && minor >= 15);
    choice.flavour = new_numbering ? Flavour::kLk615 : Flavour::kV7;
    choice.reason = absl::StrCat("blksnap: ", kUpstreamControlDevice, " present, kernel ", major,
                                 ".", minor, new_numbering ? " >= 6.15 -> lk6.15 numbering"
                                                           : " < 6.15 -> v7 numbering");
  } else if (has_val7_control) {
    return absl::UnavailableError(absl::StrCat(
        kVal7ControlDevice, " exists but ", kVal7FilterDevice,
        " does not: the bdevfilter module of the VAL-7.0 blksnap is not loaded"));
  } else {
    return absl::UnavailableError(absl::StrCat(
        "no blksnap control device (", kUpstreamControlDevice, " or ", kVal7ControlDevice,
        "): the blksnap kernel module is not loaded"));
  }

  choice.control_device = ControlDevicePath(choice.flavour);
  absl::StatusOr<std::string> version = ReadModuleVersion(kernel, choice.control_device);
  if (!version.ok()) return version.status();
  choice.module_version = *version;
  absl::StrAppend(&choice.reason, ", module version ", choice.module_version);
  return choice;
}

}  // namespace cbt::blksnap
