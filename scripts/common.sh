# shellcheck shell=sh
# Shared by the azd hooks (POSIX sh). azd runs hooks with the environment's values (`azd env set`, and the
# outputs of infra/main.bicep) in the process environment.

# require NAME...: fail, naming every missing value and how to set it.
require() {
  missing=""
  for name in "$@"; do
    if [ -z "$(printenv "$name" || true)" ]; then
      missing="$missing $name"
    fi
  done
  if [ -n "$missing" ]; then
    echo "error: missing azd environment values:$missing" >&2
    echo "       set each with: azd env set NAME VALUE (see the README, \"Deploying to Azure\")" >&2
    exit 1
  fi
}

workspace_id() { # subscription resource-group name
  echo "/subscriptions/$1/resourceGroups/$2/providers/Microsoft.MachineLearningServices/workspaces/$3"
}

registry_id() { # subscription resource-group name
  echo "/subscriptions/$1/resourceGroups/$2/providers/Microsoft.MachineLearningServices/registries/$3"
}

# deploy sub|group SCOPE-OPTION SCOPE-VALUE NAME TEMPLATE PARAMETER...: an ARM deployment of infra/TEMPLATE.
deploy() {
  kind=$1 scope_option=$2 scope_value=$3 name=$4 template=$5
  shift 5
  az deployment "$kind" create --subscription "$AZURE_SUBSCRIPTION_ID" "$scope_option" "$scope_value" \
    --name "$name" --template-file "$(dirname "$0")/../infra/$template" --parameters "$@" --output none
}
