/* Tachyon's C shim over DPDK 22.11: the inline functions and macros that bindgen cannot
 * expose (rx/tx burst, mbuf helpers, rte_errno), as ordinary functions. */
#ifndef TACHYON_DPDK_SHIM_H
#define TACHYON_DPDK_SHIM_H

#include <stdint.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

uint16_t tachyon_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t tachyon_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *tachyon_pktmbuf_alloc(struct rte_mempool *pool);
int tachyon_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned n);
void tachyon_pktmbuf_free(struct rte_mbuf *m);
char *tachyon_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
void *tachyon_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t tachyon_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t tachyon_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t tachyon_pktmbuf_nb_segs(const struct rte_mbuf *m);
unsigned tachyon_lcore_id(void);
int tachyon_errno(void);
uint64_t tachyon_rdtsc(void);
/* RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP (macros of macros: bindgen cannot evaluate them). */
uint64_t tachyon_rss_hf_ip_tcp(void);

#endif
