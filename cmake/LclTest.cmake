# Test helpers. Every gtest binary is registered whole (one CTest test per binary: the multi-rank ones must run
# all their cases in one mpirun, and one entry per binary keeps CTest's start-up cost low on 2 cores).
find_package(GTest REQUIRED)

# lcl_add_test(NAME name SOURCES a.cc ... LIBS lcl::x ... [LABELS l ...] [TIMEOUT s])
# A single-process gtest binary.
function(lcl_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} lcl_test_main)
  lcl_target_warnings(${T_NAME})
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} --expected_world_size=1)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "unit;${T_LABELS}"
                       ENVIRONMENT "${LCL_TEST_ENV}")
endfunction()

# Environment for MPI under CTest: root-safe, containers without CMA, and no Open MPI warnings about the
# interfaces it cannot use in a sandbox. LCL_PYTHON: the interpreter with torch (the project's .venv).
set(LCL_TEST_ENV
    "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_btl_vader_single_copy_mechanism=none;OMPI_MCA_rmaps_base_oversubscribe=1;LCL_SOURCE_DIR=${PROJECT_SOURCE_DIR};LCL_BINARY_DIR=${PROJECT_BINARY_DIR};LCL_PYTHON=${LCL_PYTHON}")

# The mpirun command line tests use (also exported to scripts as LCL_MPIRUN).
set(LCL_MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none
    --mca btl_vader_single_copy_mechanism none)

# lcl_add_mpi_test(NAME name SOURCES ... LIBS ... NP 2 4 [LABELS ...] [TIMEOUT s])
# A multi-rank gtest binary run under `mpirun -np N` for each N in NP (test names get a `_npN` suffix). The
# binary uses lcl_test_main: the ranks agree on the verdict and a world size other than N fails.
function(lcl_add_mpi_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;NP;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} lcl_test_main)
  lcl_target_warnings(${T_NAME})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  foreach(np ${T_NP})
    add_test(NAME ${T_NAME}_np${np}
             COMMAND ${LCL_MPIRUN} -np ${np} $<TARGET_FILE:${T_NAME}> --expected_world_size=${np})
    set_tests_properties(${T_NAME}_np${np} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "mpi;${T_LABELS}"
                         PROCESSORS ${np} ENVIRONMENT "${LCL_TEST_ENV}")
  endforeach()
endfunction()

# lcl_add_script_test(NAME name COMMAND ... [LABELS ...] [TIMEOUT s]): an end-to-end script (bash) test.
function(lcl_add_script_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  add_test(NAME ${T_NAME} COMMAND ${T_COMMAND})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  string(REPLACE ";" " " mpirun_str "${LCL_MPIRUN}")
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "script;${T_LABELS}"
                       ENVIRONMENT "${LCL_TEST_ENV};LCL_MPIRUN=${mpirun_str};LCL_BIN=$<TARGET_FILE:lcl>")
endfunction()
