# Warnings on and clean (STYLE.md 14). Applied per target with lcl_target_warnings().
function(lcl_target_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
endfunction()
