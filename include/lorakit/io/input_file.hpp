// Opening a file for reading without trusting it: only regular files are read (a directory, a FIFO, a device or
// a socket is refused without blocking, a symlink loop is an error), reads are positioned on one open handle
// (a file renamed over the path meanwhile is not mixed in), and every failure is an IoError naming the file.
#pragma once

#include "lorakit/core/error.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#define LORAKIT_INPUT_FILE_POSIX 1
#else
#include <fstream>
#include <mutex>
#define LORAKIT_INPUT_FILE_POSIX 0
#endif

namespace lorakit::io {

/// A regular file open for reading. Copies share the open handle; reads are positioned (`pread`), so const
/// reads from several threads are safe.
class InputFile {
 public:
  /// Opens `file`. Errors (IoError, naming the function `where` and the file): it does not exist, cannot be
  /// opened (permissions, a symlink loop), or is not a regular file (a directory, a FIFO, a device, a socket:
  /// refused without reading from it, so a FIFO without a writer does not block).
  InputFile(const char* where, std::filesystem::path file) : where_(where), path_(std::move(file)) {
#if LORAKIT_INPUT_FILE_POSIX
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer; the type is checked before any read.
    const int fd = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) fail("cannot open the file: ", std::strerror(errno));
    handle_ = std::make_shared<Handle>(fd);
    struct stat info {};
    if (::fstat(fd, &info) != 0) fail("cannot read the file's status: ", std::strerror(errno));
    if (!S_ISREG(info.st_mode)) fail("is ", kind(info.st_mode), ", expected a regular file");
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    size_ = static_cast<std::uint64_t>(info.st_size);
#else
    std::error_code error;
    const auto status = std::filesystem::status(path_, error);
    if (error) fail("cannot open the file: ", error.message());
    if (!std::filesystem::is_regular_file(status)) fail("is not a regular file");
    handle_ = std::make_shared<Handle>(path_);
    if (!handle_->stream) fail("cannot open the file");
    const auto size = std::filesystem::file_size(path_, error);
    if (error) fail("cannot determine the file's size: ", error.message());
    size_ = static_cast<std::uint64_t>(size);
#endif
  }

  const std::filesystem::path& path() const { return path_; }

  /// The size when the file was opened.
  std::uint64_t size() const { return size_; }

  /// Reads `count` bytes at `offset` into `out`. Errors (IoError): a read error, or the file ended first
  /// (it was truncated since it was opened); `what` names what was being read.
  void read_at(std::uint64_t offset, void* out, std::uint64_t count, const char* what) const {
    char* bytes = static_cast<char*>(out);
    std::uint64_t done = 0;
#if LORAKIT_INPUT_FILE_POSIX
    while (done < count) {
      const std::uint64_t chunk = std::min<std::uint64_t>(count - done, std::uint64_t(1) << 30);
      const ::ssize_t got = ::pread(handle_->fd, bytes + done, static_cast<std::size_t>(chunk),
                                    static_cast<::off_t>(offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) fail("reading ", what, " failed: ", std::strerror(errno));
      if (got == 0) break;
      done += static_cast<std::uint64_t>(got);
    }
#else
    {
      const std::lock_guard<std::mutex> lock(handle_->mutex);
      handle_->stream.clear();
      handle_->stream.seekg(static_cast<std::streamoff>(offset));
      handle_->stream.read(bytes, static_cast<std::streamsize>(count));
      done = static_cast<std::uint64_t>(handle_->stream.gcount());
    }
#endif
    if (done != count) {
      fail("the file ended after ", done, " of the ", count, " bytes of ", what, " (truncated since it was opened?)");
    }
  }

  /// The whole file as text. Errors (IoError): it is larger than `limit` bytes, or a read fails.
  std::string read_all(std::uint64_t limit) const {
    if (size_ > limit) fail("has ", size_, " bytes, more than the limit of ", limit, " for this kind of file");
    std::string text(static_cast<std::size_t>(size_), '\0');
    read_at(0, text.data(), size_, "the file");
    return text;
  }

  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    lorakit::detail::fail<IoError>(where_, "'", path_.string(), "': ", parts...);
  }

 private:
#if LORAKIT_INPUT_FILE_POSIX
  struct Handle {
    explicit Handle(int descriptor) : fd(descriptor) {}
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { ::close(fd); }
    int fd;
  };

  static const char* kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
  }
#else
  struct Handle {
    explicit Handle(const std::filesystem::path& file) : stream(file, std::ios::binary) {}
    std::ifstream stream;
    std::mutex mutex;
  };
#endif

  const char* where_;
  std::filesystem::path path_;
  std::shared_ptr<Handle> handle_;
  std::uint64_t size_ = 0;
};

}  // namespace lorakit::io
