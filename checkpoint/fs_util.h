// Durable file-system steps the commit protocol relies on (fsync of files and directories, atomic replace).
#pragma once

#include <string>

namespace lcl::checkpoint {

// fsync a directory so that entries created or renamed in it survive a crash. Throws CheckpointError.
void FsyncDir(const std::string& dir);
// Writes `content` to `path` through `path.tmp`: write, fsync, rename over `path`, fsync the directory.
// Readers see the old content or the new, never a partial file.
void WriteFileAtomic(const std::string& path, const std::string& content);
// The whole content of a file; throws CheckpointError naming it if it cannot be read.
std::string ReadFile(const std::string& path);

}  // namespace lcl::checkpoint
