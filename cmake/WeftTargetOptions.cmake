# Warning and sanitizer settings, applied PRIVATE to each of weft's own
# targets so that nothing leaks into a consumer's build.
function(weft_target_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Wnon-virtual-dtor
                         -Wno-unused-parameter)
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
