// The project's typed errors (STYLE.md 5): bad input and recoverable failures throw one of these, with a message
// that says what, where, expected vs found, and what to do. `main` catches lcl::Error and exits non-zero.
//
//   throw lcl::ConfigError("parallel.tp=3 does not divide the world size 4; pick tp in {1, 2, 4}");
#pragma once

#include <stdexcept>
#include <string>

namespace lcl {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  // A short category name printed before the message ("config error: ...").
  virtual const char* kind() const noexcept { return "error"; }
};

class ConfigError : public Error {
 public:
  using Error::Error;
  const char* kind() const noexcept override { return "config error"; }
};

class DataError : public Error {
 public:
  using Error::Error;
  const char* kind() const noexcept override { return "data error"; }
};

class CheckpointError : public Error {
 public:
  using Error::Error;
  const char* kind() const noexcept override { return "checkpoint error"; }
};

class CommError : public Error {
 public:
  using Error::Error;
  const char* kind() const noexcept override { return "communication error"; }
};

// A feature whose optional library was left out of this build (e.g. OpenCV, SentencePiece, NCCL).
class NotBuiltError : public Error {
 public:
  using Error::Error;
  const char* kind() const noexcept override { return "not built"; }
};

}  // namespace lcl
