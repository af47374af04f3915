#!/bin/sh
# Preflight, before anything is created. The app's roles on the staging workspace, the registry and the production
# workspace are assigned by deployments into their resource groups (infra/grants.bicep), and the staging workspace's
# Event Grid system topic and subscription are created in its resource group (infra/eventgrid.bicep). So on each of
# those three resource groups the person deploying needs Owner, or Role Based Access Control Administrator (or User
# Access Administrator) together with Contributor. Checked where the role assignments can be read; any gap fails
# here, naming what is needed and where. Custom roles cannot be judged by name: PROMOTION_PREFLIGHT=off skips this.
set -eu
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

require AZURE_SUBSCRIPTION_ID STAGING_RESOURCE_GROUP STAGING_WORKSPACE REGISTRY_NAME REGISTRY_LOCATION \
  REGISTRY_RESOURCE_GROUP PRODUCTION_RESOURCE_GROUP PRODUCTION_WORKSPACE

if [ "${PROMOTION_PREFLIGHT:-on}" = off ]; then
  echo "preflight skipped (PROMOTION_PREFLIGHT=off)"
  exit 0
fi

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
check() { # label resource-group-id resource-id
  if ! roles=$(az role assignment list --assignee "$assignee" --scope "$2" --include-inherited --include-groups \
    --query "[].roleDefinitionName" -o tsv 2>/dev/null); then
    echo "error: cannot read your role assignments on the resource group of the $1 ($2):" \
      "it does not exist, or you have no access there" >&2
    failed=1
    return
  fi
  has() { printf '%s\n' "$roles" | grep -qx "$@"; }
  if has -e 'Owner' || { has -e 'Role Based Access Control Administrator' -e 'User Access Administrator' &&
    has -e 'Contributor'; }; then
    echo "ok: you may deploy the app's access to the $1"
  else
    echo "error: you need Owner, or Role Based Access Control Administrator and Contributor, on the resource group" \
      "of the $1 ($2), to give the app's identity its role on $3" >&2
    failed=1
  fi
}

group_id() { # subscription resource-group
  echo "/subscriptions/$1/resourceGroups/$2"
}

check "staging workspace" "$(group_id "$sub" "$STAGING_RESOURCE_GROUP")" \
  "$(workspace_id "$sub" "$STAGING_RESOURCE_GROUP" "$STAGING_WORKSPACE")"
check "registry" "$(group_id "$registry_sub" "$REGISTRY_RESOURCE_GROUP")" \
  "$(registry_id "$registry_sub" "$REGISTRY_RESOURCE_GROUP" "$REGISTRY_NAME")"
check "production workspace" "$(group_id "$production_sub" "$PRODUCTION_RESOURCE_GROUP")" \
  "$(workspace_id "$production_sub" "$PRODUCTION_RESOURCE_GROUP" "$PRODUCTION_WORKSPACE")"

if [ "$failed" -ne 0 ]; then
  echo "error: preflight failed; nothing was created. Ask an owner of those resource groups for the roles above" \
    "(with custom roles that allow it, azd env set PROMOTION_PREFLIGHT off)." >&2
  exit 1
fi
