#!/bin/sh
# Preflight, before anything is created: the person deploying must be able to grant the app's identity its roles
# on the staging workspace, the registry and the production workspace, so they need Owner or Role Based Access
# Control Administrator (User Access Administrator also serves) on each. Checked where the role assignments can be
# read; any gap fails here, with what is needed and where.
set -eu
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

require AZURE_SUBSCRIPTION_ID STAGING_RESOURCE_GROUP STAGING_WORKSPACE REGISTRY_NAME REGISTRY_LOCATION \
  REGISTRY_RESOURCE_GROUP PRODUCTION_RESOURCE_GROUP PRODUCTION_WORKSPACE

sub=$AZURE_SUBSCRIPTION_ID
registry_sub=${REGISTRY_SUBSCRIPTION_ID:-$sub}
production_sub=${PRODUCTION_SUBSCRIPTION_ID:-$sub}

# Who is deploying: a user, or a service principal (CI).
assignee=$(az ad signed-in-user show --query id -o tsv 2>/dev/null || true)
if [ -z "$assignee" ]; then
  app_id=$(az account show --query user.name -o tsv)
  assignee=$(az ad sp show --id "$app_id" --query id -o tsv)
fi

failed=0
check() { # label scope
  if ! roles=$(az role assignment list --assignee "$assignee" --scope "$2" --include-inherited --include-groups \
    --query "[].roleDefinitionName" -o tsv 2>/dev/null); then
    echo "error: cannot read the role assignments on the $1 ($2): it does not exist, or you have no access there" >&2
    failed=1
    return
  fi
  if printf '%s\n' "$roles" | grep -qx -e 'Owner' -e 'Role Based Access Control Administrator' \
    -e 'User Access Administrator'; then
    echo "ok: you may assign roles on the $1"
  else
    echo "error: you need Owner or Role Based Access Control Administrator on the $1 ($2) to grant the app's" \
      "identity its role there" >&2
    failed=1
  fi
}

check "staging workspace" "$(workspace_id "$sub" "$STAGING_RESOURCE_GROUP" "$STAGING_WORKSPACE")"
check "registry" "$(registry_id "$registry_sub" "$REGISTRY_RESOURCE_GROUP" "$REGISTRY_NAME")"
check "production workspace" "$(workspace_id "$production_sub" "$PRODUCTION_RESOURCE_GROUP" "$PRODUCTION_WORKSPACE")"

if [ "$failed" -ne 0 ]; then
  echo "error: preflight failed; nothing was created. Ask an owner of those resources for the roles above." >&2
  exit 1
fi
