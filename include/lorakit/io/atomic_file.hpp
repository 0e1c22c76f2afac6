// Atomic file replacement: write a file under a temporary name in the same folder, flush it to disk, then
// rename it over the destination, so that readers see either the old file or the complete new one.
#pragma once

#include "lorakit/core/error.hpp"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#define LORAKIT_IO_POSIX 1
#else
#include <cstdio>
#define LORAKIT_IO_POSIX 0
#endif

namespace lorakit::io {

/// A file being written under a temporary name (`.<name>.tmp-<pid>-<n>` beside the destination).
/// `commit()` flushes it to the disk (fsync), renames it over the destination and syncs the folder;
/// destroying an uncommitted AtomicFile removes the temporary file, so a failed or interrupted write never
/// leaves a partial file under the destination's name.
class AtomicFile {
 public:
  /// Creates the temporary file. Errors (IoError): the folder does not exist or is not writable.
  AtomicFile(const char* where, std::filesystem::path destination)
      : where_(where), destination_(std::move(destination)) {
    const std::filesystem::path folder = destination_.has_parent_path() ? destination_.parent_path()
                                                                       : std::filesystem::path(".");
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0; attempt < 100; ++attempt) {
      temporary_ = folder / ("." + destination_.filename().string() + ".tmp-" + std::to_string(process_id()) + "-" +
                             std::to_string(counter.fetch_add(1)));
#if LORAKIT_IO_POSIX
      fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0) return;
      if (errno != EEXIST) break;
#else
      if (std::filesystem::exists(temporary_)) continue;
      file_ = std::fopen(temporary_.string().c_str(), "wb");
      if (file_ != nullptr) return;
      break;
#endif
    }
    lorakit::detail::fail<IoError>(where_, "cannot create a temporary file beside '", destination_.string(),
                          "': ", std::strerror(errno));
  }

  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  ~AtomicFile() {
    if (committed_) return;
    close_file();
    std::error_code ignored;
    std::filesystem::remove(temporary_, ignored);
  }

  /// Appends `size` bytes. Errors (IoError): the write failed (disk full, ...).
  void write(const void* data, std::size_t size) {
    const char* bytes = static_cast<const char*>(data);
#if LORAKIT_IO_POSIX
    while (size > 0) {
      const ::ssize_t written = ::write(fd_, bytes, size);
      if (written < 0) {
        if (errno == EINTR) continue;
        lorakit::detail::fail<IoError>(where_, "writing '", temporary_.string(), "' failed: ", std::strerror(errno));
      }
      bytes += written;
      size -= static_cast<std::size_t>(written);
    }
#else
    if (size > 0 && std::fwrite(bytes, 1, size, file_) != size) {
      lorakit::detail::fail<IoError>(where_, "writing '", temporary_.string(), "' failed");
    }
#endif
  }

  /// Renames the file to the destination, after flushing it to the disk when `sync` (the default; without it
  /// the rename still hides a partial file from readers, but a power loss may leave the new file incomplete).
  void commit(bool sync = true) {
#if LORAKIT_IO_POSIX
    if (sync && ::fsync(fd_) != 0) lorakit::detail::fail<IoError>(where_, "fsync of '", temporary_.string(), "' failed: ", std::strerror(errno));
#else
    (void)sync;
    if (std::fflush(file_) != 0) lorakit::detail::fail<IoError>(where_, "flushing '", temporary_.string(), "' failed");
#endif
    if (!close_file()) lorakit::detail::fail<IoError>(where_, "closing '", temporary_.string(), "' failed");
    std::error_code error;
    std::filesystem::rename(temporary_, destination_, error);
    if (error) {
      lorakit::detail::fail<IoError>(where_, "renaming '", temporary_.string(), "' to '", destination_.string(),
                            "' failed: ", error.message());
    }
    committed_ = true;
#if LORAKIT_IO_POSIX
    // Persist the rename itself (best effort: some file systems do not support syncing a folder).
    const std::filesystem::path folder = destination_.has_parent_path() ? destination_.parent_path()
                                                                       : std::filesystem::path(".");
    const int dir = sync ? ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dir >= 0) {
      (void)::fsync(dir);
      ::close(dir);
    }
#endif
  }

  const std::filesystem::path& temporary_path() const { return temporary_; }

  /// Removes the temporary files that writers of `destination` left when they died before committing (a
  /// process killed mid-write cannot run its destructor): those named for a process that no longer exists.
  /// Temporaries of live processes, this one included, are left alone. Best effort: errors are ignored.
  /// Process ids are those of this machine; a folder shared with writers on other hosts keeps their files.
  static void remove_stale_temporaries(const std::filesystem::path& destination) {
#if LORAKIT_IO_POSIX
    const std::string prefix = "." + destination.filename().string() + ".tmp-";
    const std::filesystem::path folder = destination.has_parent_path() ? destination.parent_path()
                                                                      : std::filesystem::path(".");
    std::error_code error;
    std::filesystem::directory_iterator it(folder, error), end;
    for (; !error && it != end; it.increment(error)) {
      const std::string name = it->path().filename().string();
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string rest = name.substr(prefix.size());  // "<pid>-<n>"
      const auto dash = rest.find('-');
      if (dash == 0 || dash == std::string::npos || rest.find_first_not_of("0123456789-") != std::string::npos) continue;
      const long pid = std::strtol(rest.substr(0, dash).c_str(), nullptr, 10);
      if (pid <= 0 || pid == process_id()) continue;
      if (::kill(static_cast<::pid_t>(pid), 0) != 0 && errno == ESRCH) {
        std::error_code ignored;
        std::filesystem::remove(it->path(), ignored);
      }
    }
#else
    (void)destination;
#endif
  }

 private:
  static long process_id() {
#if LORAKIT_IO_POSIX
    return static_cast<long>(::getpid());
#else
    return 0;
#endif
  }

  bool close_file() {
#if LORAKIT_IO_POSIX
    if (fd_ < 0) return true;
    const int result = ::close(fd_);
    fd_ = -1;
    return result == 0;
#else
    if (file_ == nullptr) return true;
    const int result = std::fclose(file_);
    file_ = nullptr;
    return result == 0;
#endif
  }

  const char* where_;
  std::filesystem::path destination_;
  std::filesystem::path temporary_;
#if LORAKIT_IO_POSIX
  int fd_ = -1;
#else
  std::FILE* file_ = nullptr;
#endif
  bool committed_ = false;
};

/// Flushes a folder's entries (renames, removals) to the disk. Best effort: some file systems cannot sync a folder.
inline void sync_folder(const std::filesystem::path& folder) {
#if LORAKIT_IO_POSIX
  const int dir = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
#else
  (void)folder;
#endif
}

/// Replaces `destination` atomically with `size` bytes of `data`.
inline void write_file_atomically(const char* where, const std::filesystem::path& destination, const void* data,
                                  std::size_t size) {
  AtomicFile file(where, destination);
  file.write(data, size);
  file.commit();
}

}  // namespace lorakit::io
