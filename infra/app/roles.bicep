// Every built-in role the deployment assigns, by role definition id, with the role's name beside it.
// The README's permission tables name the same roles; tests/infra checks that they agree.

@export()
@description('Built-in role definition ids (the same in every tenant).')
var roles = {
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121' // AzureML Data Scientist
  azureMLRegistryUser: '1823dd4f-9b8c-4ab6-ab4e-7397a3684615' // AzureML Registry User
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7' // EventGrid Data Sender
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
}
