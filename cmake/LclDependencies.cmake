# Finds what the project links: LibTorch, MPI, Protobuf, glog, GoogleTest; NCCL/CUDA, OpenCV and SentencePiece
# are switchable (AUTO|ON|OFF) so that a GPU box with only the core libraries can still build the trainer.

# Debian's libtorch-dev installs its CMake package under /usr/lib/<arch>/cmake/Torch; official LibTorch 2.x is
# given with -DCMAKE_PREFIX_PATH=/path/to/libtorch.
find_package(Torch REQUIRED)
# TorchConfig adds flags such as -D_GLIBCXX_USE_CXX11_ABI to TORCH_CXX_FLAGS; the imported target carries them.
find_package(MPI REQUIRED COMPONENTS C)
find_package(Protobuf REQUIRED)
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
set(LCL_HAVE_NCCL OFF)
if(NOT LCL_WITH_NCCL STREQUAL "OFF")
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${LCL_CUDA_ROOT}/include $ENV{NCCL_HOME}/include)
  find_library(NCCL_LIBRARY nccl HINTS ${LCL_CUDA_ROOT}/lib64 ${LCL_CUDA_ROOT}/lib $ENV{NCCL_HOME}/lib)
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
