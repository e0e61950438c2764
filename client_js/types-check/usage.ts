// Compiled (never run) by test/types.test.js with `tsc --noEmit`: the declarations, resolved as
// a TypeScript application would resolve the package, type-check what the README shows.
import { FedClient, FedError, score, type FedEvent } from 'fedlearn-client';

async function session(): Promise<void> {
  const client: FedClient = await FedClient.start({
    baseUrl: 'https://reco.example.com',
    user: 'u-42',
    token: 'a bearer token',
    onTokenExpired: async () => 'a fresh token',
    onError: (error: FedError) => console.warn(error.message),
  });
  const ranked = client.rank([{ id: 'item-1' }, { id: 'item-2' }], { hour: 21 });
  const best: string = ranked[0].id;
  client.click(best, { hour: 21 });
  client.skip(ranked[1].id);
  const queued: number = client.stats.queued;
  await client.close();
  void queued;
  void score;
}

// @ts-expect-error: start needs a user and a token
FedClient.start({ baseUrl: '' });

export type { FedEvent };
void session;
