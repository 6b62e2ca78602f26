"""Push notifications: waking devices that have no connection through Apple's (APNs) and
Google's (FCM) push services (docs/push.md).

* planner.py: which device is owed a push for which chat, and when (sans-I/O: coalescing, the
  ack grace, backoff after a provider failure);
* service.py: the PushService that feeds the planner from commits and reads, keeps its queue
  durable in the store, checks cursors and mutes, and sends;
* notification.py: what a push says (content-free by default);
* apns.py, fcm.py: clients of the two providers' HTTP/2 APIs, with their token hygiene;
* delivery.py: the outcome of one send, retries with backoff honouring Retry-After;
* providers.py: the providers the `[push]` configuration names.
"""
