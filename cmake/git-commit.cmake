# Run at every build (not only at configure): writes OUT with the commit that
# capsules record, rewriting it only when the id changed so that an unchanged
# tree recompiles nothing. "-dirty": the tree differs from that commit (as on
# the device machine, whose .git is a snapshot of the session start).
execute_process(COMMAND git describe --always --dirty --abbrev=12
  WORKING_DIRECTORY ${SRC} OUTPUT_VARIABLE commit
  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT commit)
  set(commit unknown)
endif()
set(text "#define ZMLX_GIT_COMMIT \"${commit}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE ${OUT} "${text}")
endif()
