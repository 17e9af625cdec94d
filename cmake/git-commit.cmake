# Run at every build (not only at configure): writes OUT with the commit that
# capsules record, rewriting it only when the id changed so that an unchanged
# tree recompiles nothing. "-dirty": the tree differs from that commit (as on
# the device machine, whose .git is a snapshot of the session start).
# $ZMLX_GIT_COMMIT, where set, is recorded instead: a copy of a tree without
# its own history (the device's) is told the commit it was taken from.
if(NOT "$ENV{ZMLX_GIT_COMMIT}" STREQUAL "")
  set(commit "$ENV{ZMLX_GIT_COMMIT}")
  if(NOT commit MATCHES "^[0-9A-Za-z._+-]+$")
    message(FATAL_ERROR "ZMLX_GIT_COMMIT='${commit}': only letters, digits, '.', '_', '+' and '-' may name a commit")
  endif()
else()
  execute_process(COMMAND git describe --always --dirty --abbrev=12
    WORKING_DIRECTORY ${SRC} OUTPUT_VARIABLE commit
    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(NOT commit)
    set(commit unknown)
  endif()
endif()
set(text "#define ZMLX_GIT_COMMIT \"${commit}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE ${OUT} "${text}")
endif()
