// RemoteKernel: the Kernel seam (kernel.h) served by a blksnap uapi emulator process.
//
// The emulator (tests/blksnap_emulator, binary `blksnap-emulator`) keeps the emulated kernel
// state (devices, trackers, CBT maps, snapshots) in its own process, so that state outlives
// daemon restarts exactly like a real kernel's. Each seam call is one request/response on a
// Unix SOCK_SEQPACKET connection (wire format: remote_protocol.h). Ioctl arguments are passed
// by ADDRESS: the emulator reads and writes this process's memory with process_vm_readv/writev
// (it needs ptrace access to this process; NewRemoteKernel allows any tracer when the Yama LSM
// is active), so callers use the uapi structs exactly as with the real kernel.
//
// Thread-safe. Calls from different threads use different connections (an idle-connection
// pool), so a blocking WAIT_EVENT does not hold up other calls. File descriptors belong to this
// process and are valid on every connection. A transport failure (emulator gone) makes the
// call return ENOTCONN.
#ifndef CBT_AGENT_BLKSNAP_REMOTE_KERNEL_H_
#define CBT_AGENT_BLKSNAP_REMOTE_KERNEL_H_

#include <memory>
#include <string>

#include "blksnap/kernel.h"

namespace cbt::blksnap {

// Connects lazily: creating the kernel never fails; calls fail with ENOTCONN while the socket
// does not accept connections.
std::unique_ptr<Kernel> NewRemoteKernel(const std::string& socket_path);

}  // namespace cbt::blksnap

#endif  // CBT_AGENT_BLKSNAP_REMOTE_KERNEL_H_
