// glog's LOG, VLOG and CHECK for every lcl file, whether or not LibTorch was built with glog. Include this header,
// never <glog/logging.h> itself (glog_include_test in tests/CMakeLists.txt checks it).
//
//   #include "cluster/log.h"
//   LOG(INFO) << "resumed from " << dir;  // reaches <run_dir>/logs/rank<r>.log through cluster/logging.h's sink
//
// Why: a LibTorch built without glog (PyTorch's wheels and zips; Debian's 1.13 had glog) defines its own LOG,
// LOG_IF, VLOG, VLOG_IF, VLOG_IS_ON, CHECK, DCHECK and DLOG in c10/util/logging_is_not_google_glog.h, and whichever
// of that header and glog's comes last in a translation unit wins, with no warning (both are system headers).
// When c10's win, LOG(INFO) goes to c10's logger, which drops INFO and bypasses the rank log files. So this header
// reads c10's logging first, removes its macros and then reads glog's. Include guards make the order of the files
// around it irrelevant: c10's header is never read again, and a file that read glog's header before this one
// fails to compile (LOG undefined) instead of logging to the wrong place.
#pragma once

#include <c10/util/Logging.h>

#ifndef C10_USE_GLOG
#undef LOG
#undef LOG_IF
#undef VLOG
#undef VLOG_IF
#undef VLOG_IS_ON
#undef CHECK
#undef DCHECK
#undef DLOG
#endif

#include <glog/logging.h>
