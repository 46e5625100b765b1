# Bash completion for Flotilla's xe: `source scripts/xe-completion.bash` (or copy it to
# /etc/bash_completion.d/xe). Commands come from `xe help-commands`; parameters from the
# command's usual names.
_flotilla_xe() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  if [ "$COMP_CWORD" -eq 1 ] || [[ ${COMP_WORDS[COMP_CWORD-1]} == -* && $COMP_CWORD -eq 3 ]]; then
    COMPREPLY=($(compgen -W "$(xe help-commands 2>/dev/null)" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "uuid= vm= name-label= new-name-label= params= param-name= param-key= sr-uuid= vdi-uuid= vm-uuid= network-uuid= device= filename= host= host-uuid= on= master-address= master-username= master-password= --minimal --force --multiple" -- "$cur"))
  fi
}
complete -o nospace -F _flotilla_xe xe
