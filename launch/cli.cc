// Shared pieces of the command tree.
#include "launch/cli.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "cluster/errors.h"

extern char** environ;

namespace lcl::launch {

std::string FindPython(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("LCL_PYTHON"); env != nullptr && *env != '\0') return env;
  const std::string venv = std::string(LCL_SOURCE_DIR) + "/.venv/bin/python";
  if (access(venv.c_str(), X_OK) == 0) return venv;
  return "python3";
}

int RunSourceScript(const std::string& python_flag, const std::string& script, const std::vector<std::string>& args,
                    const std::string& needs) {
  const std::string path = std::string(LCL_SOURCE_DIR) + "/launch/" + script;
  if (!std::filesystem::exists(path)) {
    throw ConfigError("the script " + path + " is missing: lcl runs it from the source tree this lcl was built from");
  }
  std::vector<std::string> argv = {FindPython(python_flag), path};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargs;
  for (const auto& a : argv) cargs.push_back(const_cast<char*>(a.c_str()));
  cargs.push_back(nullptr);
  std::cout.flush();
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, cargs[0], nullptr, nullptr, cargs.data(), environ);
  if (rc != 0) {
    throw ConfigError("cannot run python '" + argv[0] + "' (" + std::strerror(rc) + "): install python3 with " + needs +
                      " (launch/setup.sh makes .venv from launch/requirements.txt), or name one with " +
                      "--python or LCL_PYTHON");
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw ConfigError("waiting for " + script + ": " + std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  throw ConfigError(script + " was ended by signal " + std::to_string(WTERMSIG(status)));
}

cluster::MpiSession& Launch::Mpi() {
  // Created on first use, so a command that needs no MPI never starts it.
  if (!mpi) mpi = std::make_unique<cluster::MpiSession>(argc, argv);
  return *mpi;
}

}  // namespace lcl::launch
