# Warning and sanitizer settings, applied PRIVATE to each of weft's own
# targets so that nothing leaks into a consumer's build.
include(CheckCXXCompilerFlag)
check_cxx_compiler_flag(-fstack-clash-protection WEFT_HAVE_STACK_CLASH_PROTECTION)

function(weft_target_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Wnon-virtual-dtor
                         -Wno-unused-parameter)
  # Fiber stacks sit side by side in slabs, each behind a guard: a frame
  # larger than a page must touch every page it allocates, so that it
  # faults in the guard instead of jumping over it into the neighbour.
  if(WEFT_HAVE_STACK_CLASH_PROTECTION)
    target_compile_options(${target} PRIVATE -fstack-clash-protection)
  endif()
  if(WEFT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(WEFT_SANITIZE)
    if(NOT WEFT_SANITIZE MATCHES "^(address|thread|undefined)$")
      message(FATAL_ERROR "WEFT_SANITIZE must be address, thread or undefined")
    endif()
    target_compile_options(${target} PRIVATE -fsanitize=${WEFT_SANITIZE} -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=${WEFT_SANITIZE})
  endif()
endfunction()
