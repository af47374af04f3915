#!/bin/sh
# After `azd provision`: give the app's identity its roles on the staging workspace, the registry and the production
# workspace (infra/grants.bicep). A separate deployment, so that `azd down` never takes their resource groups for
# its own; scripts/predown.sh removes these assignments.
set -eu
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

require AZURE_ENV_NAME AZURE_LOCATION AZURE_SUBSCRIPTION_ID AZURE_PRINCIPAL_ID STAGING_RESOURCE_GROUP \
  STAGING_WORKSPACE REGISTRY_NAME REGISTRY_RESOURCE_GROUP PRODUCTION_RESOURCE_GROUP PRODUCTION_WORKSPACE

deploy sub --location "$AZURE_LOCATION" "promotion-grants-$AZURE_ENV_NAME" grants.bicep \
  principalId="$AZURE_PRINCIPAL_ID" \
  stagingResourceGroup="$STAGING_RESOURCE_GROUP" \
  stagingWorkspaceName="$STAGING_WORKSPACE" \
  registrySubscriptionId="${REGISTRY_SUBSCRIPTION_ID:-$AZURE_SUBSCRIPTION_ID}" \
  registryResourceGroup="$REGISTRY_RESOURCE_GROUP" \
  registryName="$REGISTRY_NAME" \
  productionSubscriptionId="${PRODUCTION_SUBSCRIPTION_ID:-$AZURE_SUBSCRIPTION_ID}" \
  productionResourceGroup="$PRODUCTION_RESOURCE_GROUP" \
  productionWorkspaceName="$PRODUCTION_WORKSPACE"
echo "ok: the app's identity has its roles on the staging workspace, the registry and the production workspace"
