# Finds what the project links: LibTorch, MPI, Protobuf, glog, GoogleTest; NCCL/CUDA, OpenCV and SentencePiece
# are switchable (AUTO|ON|OFF) so that a GPU box with only the core libraries can still build the trainer.

# Protobuf before Torch, and not from CMAKE_PREFIX_PATH. LibTorch's Caffe2Config defines protobuf::libprotobuf as
# an empty alias when no such target exists yet, which would leave lcl unlinked from protobuf. And LibTorch 2.x
# (wheel and zip) ships an old protoc and part of that release's headers (bin/protoc, include/google/protobuf), which
# CMAKE_PREFIX_PATH=<libtorch> would find ahead of the protobuf whose library we link. Another protobuf is chosen
# with -DProtobuf_ROOT=...
set(CMAKE_FIND_USE_CMAKE_PATH FALSE)
set(CMAKE_FIND_USE_CMAKE_ENVIRONMENT_PATH FALSE)
find_package(Protobuf REQUIRED)
unset(CMAKE_FIND_USE_CMAKE_PATH)
unset(CMAKE_FIND_USE_CMAKE_ENVIRONMENT_PATH)
# Torch's include directory comes before the compiler's own /usr/include, where Debian's protobuf lives: a directory
# holding only a link to protobuf's headers, put first on every target's include path, makes those win.
set(_lcl_pb_first ${PROJECT_BINARY_DIR}/include-protobuf-first)
file(MAKE_DIRECTORY ${_lcl_pb_first}/google)
file(CREATE_LINK ${Protobuf_INCLUDE_DIR}/google/protobuf ${_lcl_pb_first}/google/protobuf SYMBOLIC)
include_directories(BEFORE SYSTEM ${_lcl_pb_first})

# LibTorch 2.x: by default the PyTorch wheel in the project's .venv (launch/setup.sh passes its torch/ directory as
# CMAKE_PREFIX_PATH), or any other LibTorch 2.x with -DCMAKE_PREFIX_PATH=/path/to/libtorch (LCL_LIBTORCH_DIR for
# setup.sh). Give the torch/ or libtorch/ directory itself, not only its share/cmake: TorchConfig looks for
# libtorch.so on the default paths before its own lib/, and would take another LibTorch's (say Debian's) from there.
find_package(Torch REQUIRED)
if(Torch_VERSION VERSION_LESS 2.0)
  message(FATAL_ERROR "lcl needs LibTorch 2.x; found ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}. Run "
                      "launch/setup.sh (it installs the tested wheel) or pass -DCMAKE_PREFIX_PATH=/path/to/libtorch.")
elseif(Torch_VERSION VERSION_LESS 2.12)
  message(WARNING "LibTorch ${Torch_VERSION} is older than 2.12, the version CI builds and tests; it may work.")
endif()
get_filename_component(_lcl_torch_lib_dir ${TORCH_LIBRARY} DIRECTORY)
get_filename_component(_lcl_torch_prefix_lib ${TORCH_INSTALL_PREFIX}/lib ABSOLUTE)
if(NOT _lcl_torch_lib_dir STREQUAL _lcl_torch_prefix_lib)
  message(FATAL_ERROR "TorchConfig.cmake from ${TORCH_INSTALL_PREFIX} picked ${TORCH_LIBRARY}, another LibTorch's "
                      "library. Pass the LibTorch directory itself: -DCMAKE_PREFIX_PATH=${TORCH_INSTALL_PREFIX} "
                      "(and remove the build directory's CMakeCache.txt).")
endif()
# TorchConfig adds flags such as -D_GLIBCXX_USE_CXX11_ABI to TORCH_CXX_FLAGS; the imported target carries them.
find_package(MPI REQUIRED COMPONENTS C)
find_package(Threads REQUIRED)

# glog: 0.6 ships a CMake package; fall back to pkg-config for older installs.
find_package(glog CONFIG QUIET)
if(NOT TARGET glog::glog)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(GLOG REQUIRED IMPORTED_TARGET libglog)
  add_library(glog::glog ALIAS PkgConfig::GLOG)
endif()

# Header-only JSON (config.json, jsonl files, bench lines) and the CLI parser: both required, found once here.
find_package(nlohmann_json 3 REQUIRED)
find_package(CLI11 CONFIG REQUIRED)

# xxHash (XXH3-64 checksums of checkpoint shards): required; Debian's libxxhash-dev ships no CMake package.
find_path(XXHASH_INCLUDE_DIR xxhash.h)
find_library(XXHASH_LIBRARY xxhash)
if(NOT XXHASH_INCLUDE_DIR OR NOT XXHASH_LIBRARY)
  message(FATAL_ERROR "xxHash was not found (xxhash.h and libxxhash): apt-get install libxxhash-dev, or set "
                      "XXHASH_INCLUDE_DIR and XXHASH_LIBRARY.")
endif()

# --- NCCL (and the CUDA runtime it needs for streams and events) -------------------------------------------
# Which libnccl.so.2: LibTorch's own. libtorch_cuda.so needs libnccl.so.2 (the wheel finds it through its RPATH
# in site-packages/nvidia/nccl/lib), and a process holds one library per soname: whichever libnccl.so.2 the loader
# meets first serves both lcl and LibTorch. Linking the toolkit's (2.28 under /usr/local/cuda) would hand LibTorch,
# built against the wheel's 2.29, an older NCCL than it was built for. So the header and library are looked for next
# to LibTorch first (the wheel's nvidia/nccl, then libtorch/lib), then NCCL_HOME and LCL_CUDA_ROOT.
set(LCL_HAVE_NCCL OFF)
if(NOT LCL_WITH_NCCL STREQUAL "OFF")
  set(_lcl_nccl_roots ${TORCH_INSTALL_PREFIX}/../nvidia/nccl ${TORCH_INSTALL_PREFIX} $ENV{NCCL_HOME} ${LCL_CUDA_ROOT})
  set(_lcl_nccl_inc)
  set(_lcl_nccl_lib)
  foreach(root ${_lcl_nccl_roots})
    list(APPEND _lcl_nccl_inc ${root}/include)
    list(APPEND _lcl_nccl_lib ${root}/lib ${root}/lib64)
  endforeach()
  find_path(NCCL_INCLUDE_DIR nccl.h PATHS ${_lcl_nccl_inc} NO_DEFAULT_PATH)
  find_path(NCCL_INCLUDE_DIR nccl.h)
  # The wheel ships libnccl.so.2 without the libnccl.so development link.
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 NAMES_PER_DIR PATHS ${_lcl_nccl_lib} NO_DEFAULT_PATH)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2)
  find_path(CUDART_INCLUDE_DIR cuda_runtime_api.h HINTS ${LCL_CUDA_ROOT}/include)
  find_library(CUDART_LIBRARY cudart HINTS ${LCL_CUDA_ROOT}/lib64 ${LCL_CUDA_ROOT}/lib)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY AND CUDART_INCLUDE_DIR AND CUDART_LIBRARY)
    set(LCL_HAVE_NCCL ON)
    add_library(lcl_nccl INTERFACE)
    # SYSTEM: CUDA headers are not ours to keep -Wextra clean.
    target_include_directories(lcl_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR} ${CUDART_INCLUDE_DIR})
    target_link_libraries(lcl_nccl INTERFACE ${NCCL_LIBRARY} ${CUDART_LIBRARY})
  elseif(LCL_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "LCL_WITH_NCCL=ON but nccl.h/libnccl or the CUDA runtime were not found under "
                        "LCL_CUDA_ROOT=${LCL_CUDA_ROOT} or NCCL_HOME. Set -DLCL_CUDA_ROOT=... or -DLCL_WITH_NCCL=OFF.")
  endif()
endif()

# --- The lcl executable's malloc ---------------------------------------------------------------------------
# glibc's malloc serves large tensors from its main heap once that heap has grown, and cannot hand the holes back:
# at a 16-shot official episode on the `small` preset the heap held 1,385 MiB for 852 MiB of live allocations, and
# the step's peak RSS was 30% above what lcl plan counts. gperftools' tcmalloc returns freed spans to the system; with
# it the same step peaks at 1,199 MiB (docs/performance.md, "The planner"). Linked into the lcl executable only (the
# libraries and the tests keep whatever malloc the process has); LD_PRELOAD of another allocator still wins.
set(LCL_WITH_TCMALLOC AUTO CACHE STRING "Link lcl with gperftools' tcmalloc: AUTO (where found), ON, OFF")
set(LCL_HAVE_TCMALLOC OFF)
if(NOT LCL_WITH_TCMALLOC STREQUAL "OFF")
  find_library(TCMALLOC_LIBRARY NAMES tcmalloc_minimal libtcmalloc_minimal.so.4)
  if(TCMALLOC_LIBRARY)
    set(LCL_HAVE_TCMALLOC ON)
  elseif(LCL_WITH_TCMALLOC STREQUAL "ON")
    message(FATAL_ERROR "LCL_WITH_TCMALLOC=ON but libtcmalloc_minimal was not found (apt-get install "
                        "libgoogle-perftools-dev), or pass -DLCL_WITH_TCMALLOC=OFF for the C library's malloc.")
  else()
    message(WARNING "tcmalloc was not found (apt-get install libgoogle-perftools-dev): lcl uses the C library's "
                    "malloc, whose peak memory at long episodes is up to 30% above lcl plan's figure.")
  endif()
endif()

# --- OpenCV -------------------------------------------------------------------------------------------------
set(LCL_HAVE_OPENCV OFF)
if(NOT LCL_WITH_OPENCV STREQUAL "OFF")
  find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
  if(OpenCV_FOUND)
    set(LCL_HAVE_OPENCV ON)
  elseif(LCL_WITH_OPENCV STREQUAL "ON")
    message(FATAL_ERROR "LCL_WITH_OPENCV=ON but OpenCV was not found (apt-get install libopencv-dev).")
  endif()
endif()

# --- SentencePiece ------------------------------------------------------------------------------------------
set(LCL_HAVE_SENTENCEPIECE OFF)
if(NOT LCL_WITH_SENTENCEPIECE STREQUAL "OFF")
  find_path(SENTENCEPIECE_INCLUDE_DIR sentencepiece_processor.h)
  find_library(SENTENCEPIECE_LIBRARY sentencepiece)
  find_library(SENTENCEPIECE_TRAIN_LIBRARY sentencepiece_train)
  if(SENTENCEPIECE_INCLUDE_DIR AND SENTENCEPIECE_LIBRARY AND SENTENCEPIECE_TRAIN_LIBRARY)
    set(LCL_HAVE_SENTENCEPIECE ON)
  elseif(LCL_WITH_SENTENCEPIECE STREQUAL "ON")
    message(FATAL_ERROR "LCL_WITH_SENTENCEPIECE=ON but SentencePiece was not found "
                        "(apt-get install libsentencepiece-dev).")
  endif()
endif()

# ccache where present: rebuilds on the 2-core CI machine are dominated by LibTorch headers.
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

# --- Build information for `lcl --version` ---------------------------------------------------------------------
# The git revision is refreshed at every build (not only at configure time); see cmake/GitRevision.cmake.
set(LCL_GIT_REVISION_CC ${PROJECT_BINARY_DIR}/generated/git_revision.cc)
set(lcl_git_revision_args -DSOURCE_DIR=${PROJECT_SOURCE_DIR} -DOUT=${LCL_GIT_REVISION_CC}
                          -P ${PROJECT_SOURCE_DIR}/cmake/GitRevision.cmake)
execute_process(COMMAND ${CMAKE_COMMAND} ${lcl_git_revision_args})
add_custom_target(lcl_git_revision COMMAND ${CMAKE_COMMAND} ${lcl_git_revision_args}
                  BYPRODUCTS ${LCL_GIT_REVISION_CC} VERBATIM)
foreach(part NCCL OPENCV SENTENCEPIECE)
  if(LCL_HAVE_${part})
    set(LCL_HAVE_${part}_01 1)
  else()
    set(LCL_HAVE_${part}_01 0)
  endif()
endforeach()
configure_file(${PROJECT_SOURCE_DIR}/cmake/build_info.h.in ${PROJECT_BINARY_DIR}/generated/lcl/build_info.h @ONLY)
