/* See shim.h. Each function is a one-line wrapper, compiled with DPDK's own flags
 * (pkg-config --cflags libdpdk, which includes -march: rte_memcpy.h needs it). */
#include "shim.h"

#include <rte_cycles.h>

uint16_t tachyon_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t tachyon_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *tachyon_pktmbuf_alloc(struct rte_mempool *pool)
{
    return rte_pktmbuf_alloc(pool);
}

int tachyon_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned n)
{
    return rte_pktmbuf_alloc_bulk(pool, mbufs, n);
}

void tachyon_pktmbuf_free(struct rte_mbuf *m)
{
    rte_pktmbuf_free(m);
}

char *tachyon_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
    return rte_pktmbuf_append(m, len);
}

void *tachyon_pktmbuf_mtod(struct rte_mbuf *m)
{
    return rte_pktmbuf_mtod(m, void *);
}

uint16_t tachyon_pktmbuf_data_len(const struct rte_mbuf *m)
{
    return rte_pktmbuf_data_len(m);
}

uint32_t tachyon_pktmbuf_pkt_len(const struct rte_mbuf *m)
{
    return rte_pktmbuf_pkt_len(m);
}

uint16_t tachyon_pktmbuf_nb_segs(const struct rte_mbuf *m)
{
    return m->nb_segs;
}

unsigned tachyon_lcore_id(void)
{
    return rte_lcore_id();
}

int tachyon_errno(void)
{
    return rte_errno;
}

uint64_t tachyon_rdtsc(void)
{
    return rte_rdtsc();
}

uint64_t tachyon_rss_hf_ip_tcp(void)
{
    return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP;
}
