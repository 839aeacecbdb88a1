// no_cma_exec: runs a command the way Docker's default seccomp profile does for cross-memory attach:
// process_vm_readv and process_vm_writev fail with EPERM. Tests use it to show what lcl does on a node where Open
// MPI's shared-memory single copy (CMA) is refused.
//   no_cma_exec COMMAND [ARGS...]
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: no_cma_exec COMMAND [ARGS...]\n");
    return 2;
  }
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_readv, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_writev, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(code) / sizeof(code[0])), code};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    std::fprintf(stderr, "no_cma_exec: cannot install the seccomp filter: %s\n", std::strerror(errno));
    return 3;
  }
  execvp(argv[1], argv + 1);
  std::fprintf(stderr, "no_cma_exec: cannot run %s: %s\n", argv[1], std::strerror(errno));
  return 127;
}
